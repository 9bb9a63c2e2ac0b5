import type { ClientRegistry } from '../clients/registry.js';
import { CpuSampler, hostRamUtilization, round1, type SeedMetrics } from './host-metrics.js';
import type { FarmMetrics } from './metrics.js';

export interface FarmOverview extends SeedMetrics {
  /** The same keys for the whole farm, from the workers' latest heartbeats. */
  farm: SeedMetrics;
  tasks_by_status: Record<string, number>;
}

/** GET /api/metrics and GET /metrics. */
export class MonitoringService {
  private readonly cpu = new CpuSampler();

  constructor(
    private readonly registry: ClientRegistry,
    private readonly metrics: FarmMetrics,
    private readonly countTasks: () => Promise<Record<string, number>>,
  ) {}

  /** The seed's metrics object for this server host, plus `farm` for the workers. */
  async overview(): Promise<FarmOverview> {
    const counts = await this.countTasks();
    const active = (counts.running ?? 0) + (counts.paused ?? 0);
    const connected = [...this.registry.all()].filter((c) => c.send);
    const cpu: number[] = [];
    const ram: number[] = [];
    const gpus: SeedMetrics['gpu_utilization'] = [];
    for (const c of connected) {
      const u = c.utilization;
      if (!u) continue;
      if (u.cpu_utilization !== undefined) cpu.push(u.cpu_utilization);
      if (u.ram_utilization !== undefined) ram.push(u.ram_utilization);
      for (const g of u.gpu_utilization ?? []) {
        gpus.push({ client_id: c.id, id: g.id, utilization: g.utilization, memory_used: g.memory_used ?? 0 });
      }
    }
    const mean = (xs: number[]) => (xs.length ? round1(xs.reduce((a, b) => a + b, 0) / xs.length) : 0);
    return {
      cpu_utilization: this.cpu.sample(),
      ram_utilization: hostRamUtilization(),
      gpu_utilization: [],
      active_tasks: active,
      connected_clients: connected.length,
      farm: {
        cpu_utilization: mean(cpu),
        ram_utilization: mean(ram),
        gpu_utilization: gpus,
        active_tasks: active,
        connected_clients: connected.length,
      },
      tasks_by_status: counts,
    };
  }

  async prometheus(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() };
  }
}
