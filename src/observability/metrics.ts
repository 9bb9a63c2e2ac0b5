import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one server, in a registry of its own (no global singleton). */
export interface FarmMetrics {
  registry: Registry;
  connectedClients: Gauge;
  tasksByStatus: Gauge<'status'>;
  dispatchLatency: Histogram;
  /** Dispatch passes: `placed` some work, `idle` (looked at the queue, placed nothing), `skipped` (nothing had changed). */
  dispatchPasses: Counter<'outcome'>;
  messages: Counter<'type' | 'direction'>;
  errors: Counter<'code'>;
}

export function createMetrics(opts: {
  tasksByStatus: () => Promise<Record<string, number>>;
  connected: () => number;
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'aifarm_process_' });
  const metrics: FarmMetrics = {
    registry,
    connectedClients: new Gauge({
      name: 'aifarm_connected_clients',
      help: 'Workers connected to this server instance.',
      registers: [registry],
      collect() {
        this.set(opts.connected());
      },
    }),
    tasksByStatus: new Gauge({
      name: 'aifarm_tasks',
      help: 'Tasks by status (whole farm, from the database).',
      labelNames: ['status'],
      registers: [registry],
      async collect() {
        const counts = await opts.tasksByStatus();
        this.reset();
        for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
      },
    }),
    dispatchLatency: new Histogram({
      name: 'aifarm_dispatch_latency_seconds',
      help: 'From a task becoming pending to its task message being sent.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    dispatchPasses: new Counter({
      name: 'aifarm_dispatch_passes_total',
      help: 'Dispatch passes by outcome: placed, idle (placed nothing), skipped (nothing had changed since an idle pass).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    messages: new Counter({
      name: 'aifarm_ws_messages_total',
      help: 'WebSocket messages by type and direction.',
      labelNames: ['type', 'direction'],
      registers: [registry],
    }),
    errors: new Counter({
      name: 'aifarm_errors_total',
      help: 'Errors answered to clients, by code.',
      labelNames: ['code'],
      registers: [registry],
    }),
  };
  return metrics;
}
