import type { Presence } from '../bus/presence.js';
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
    /** Farm-wide connected clients (all instances); this instance's registry when absent. */
    private readonly presence?: Presence,
  ) {}

  /**
   * The seed's metrics object for this server host, plus `farm` for the workers.
   * `connected_clients` counts the whole farm (every instance, through presence); the
   * utilization means come from the heartbeats of this instance's clients.
   */
  async overview(): Promise<FarmOverview> {
    const [counts, everywhere] = await Promise.all([this.countTasks(), this.presence?.connected()]);
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
    const connectedClients = everywhere?.size ?? connected.length;
    const mean = (xs: number[]) => (xs.length ? round1(xs.reduce((a, b) => a + b, 0) / xs.length) : 0);
    return {
      cpu_utilization: this.cpu.sample(),
      ram_utilization: hostRamUtilization(),
      gpu_utilization: [],
      active_tasks: active,
      connected_clients: connectedClients,
      farm: {
        cpu_utilization: mean(cpu),
        ram_utilization: mean(ram),
        gpu_utilization: gpus,
        active_tasks: active,
        connected_clients: connectedClients,
      },
      tasks_by_status: counts,
    };
  }

  async prometheus(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() };
  }
}
