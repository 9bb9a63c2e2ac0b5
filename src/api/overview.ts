import { Type, type Static } from '@sinclair/typebox';
import { Timestamp } from './common.js';

/**
 * What the admin panel's overview shows, and the messages of its live stream
 * (GET /api/events, Server-Sent Events).
 */

/** The seed's metrics object, for the whole farm (averages over connected clients). */
export const FarmMetrics = Type.Object({
  cpu_utilization: Type.Union([Type.Number(), Type.Null()], { description: 'Percent, 0-100.' }),
  ram_utilization: Type.Union([Type.Number(), Type.Null()], { description: 'Percent, 0-100.' }),
  gpu_utilization: Type.Array(
    Type.Object({
      id: Type.String({ description: 'client id:GPU id' }),
      utilization: Type.Number(),
      memory_used: Type.Union([Type.Number(), Type.Null()], { description: 'MB' }),
    }),
  ),
  active_tasks: Type.Integer(),
  connected_clients: Type.Integer(),
});
export type FarmMetrics = Static<typeof FarmMetrics>;

export const ThroughputPoint = Type.Object({
  at: Timestamp,
  completed_per_min: Type.Number(),
  failed_per_min: Type.Number(),
});
export type ThroughputPoint = Static<typeof ThroughputPoint>;

export const Overview = Type.Object({
  at: Timestamp,
  tasks: Type.Object({
    total: Type.Integer(),
    by_status: Type.Record(Type.String(), Type.Integer()),
  }),
  clients: Type.Object({
    total: Type.Integer(),
    connected: Type.Integer(),
    cordoned: Type.Integer(),
  }),
  metrics: FarmMetrics,
  server: Type.Union(
    [
      Type.Object({
        cpu_utilization: Type.Number({ description: 'Percent.' }),
        ram_utilization: Type.Number({ description: 'Percent.' }),
      }),
      Type.Null(),
    ],
    { description: 'The server host itself (from GET /api/metrics), when known.' },
  ),
  throughput: Type.Array(ThroughputPoint, {
    description: 'Tasks finished per minute, sampled; the full history or only the newest point.',
  }),
});
export type Overview = Static<typeof Overview>;

/**
 * The live stream's events, by SSE event name. `task` and `client` relay the bus;
 * `overview` comes on connect (full throughput history) and then periodically and after
 * changes (newest throughput point only, `full: false`).
 */
export interface PanelEvents {
  task: { task_id: number; status: string; progress?: number };
  client: { client_id: string; status?: string; connected?: boolean };
  overview: Overview & { full: boolean };
}
export type PanelEventName = keyof PanelEvents;
