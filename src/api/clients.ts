import { Type, type Static } from '@sinclair/typebox';
import { ListQuery, StatusBody, Timestamp } from './common.js';

export const ClientStatusSchema = Type.Union([Type.Literal('active'), Type.Literal('inactive')]);

export const Client = Type.Object(
  {
    id: Type.String(),
    hostname: Type.Union([Type.String(), Type.Null()]),
    cpu_info: Type.Unknown({ description: 'As the client reported it: brand, cores, frequency, usage.' }),
    ram_info: Type.Unknown({ description: 'total, available, used (bytes), percent.' }),
    gpu_info: Type.Unknown({ description: 'List of GPUs, or null.' }),
    session_info: Type.Unknown(),
    last_seen: Timestamp,
    status: Type.Union([Type.Literal('active'), Type.Literal('inactive')], {
      description: 'active when connected and not cordoned; inactive otherwise.',
    }),
    connected: Type.Boolean(),
    cordoned: Type.Boolean({ description: 'Set by PUT status "inactive": no new work goes to it.' }),
    registered_at: Timestamp,
    utilization: Type.Unknown({ description: 'Latest heartbeat utilization.' }),
  },
  { description: 'A client (worker machine).' },
);
export type Client = Static<typeof Client>;

export const ListClientsQuery = ListQuery({
  status: Type.Optional(ClientStatusSchema),
  connected: Type.Optional(Type.Boolean()),
});
export type ListClientsQuery = Static<typeof ListClientsQuery>;

export const ChangeClientStatusBody = StatusBody(ClientStatusSchema);
