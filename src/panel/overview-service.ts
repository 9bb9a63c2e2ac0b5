import type { FarmMetrics, Overview, ThroughputPoint } from '../api/overview.js';
import type { Kysely } from 'kysely';
import type { Database } from '../storage/schema.js';
import * as repo from '../storage/overview-repo.js';
import { parseJson, type Clock } from '../storage/values.js';

/** The seed's metrics as GET /api/metrics computes them (MonitoringService), for the server and the farm. */
export interface SeedMetricsSource {
  overview(): Promise<{
    cpu_utilization: number;
    ram_utilization: number;
    farm: {
      cpu_utilization: number;
      ram_utilization: number;
      gpu_utilization: {
        id: number | string;
        utilization: number;
        memory_used: number;
        client_id?: string;
      }[];
      active_tasks: number;
      connected_clients: number;
    };
  }>;
}

/** How throughput is sampled, and where utilization comes from. */
export interface OverviewOptions {
  /** Points of throughput history kept in memory (default 720: an hour at 5 s). */
  historyPoints?: number;
  /**
   * GET /api/metrics' source, so the panel shows the same figures as the API. Without it,
   * utilization is computed from what clients last reported to the database.
   */
  metrics?: SeedMetricsSource | undefined;
}

interface Counts {
  t: number;
  finished: number;
  failed: number;
}

/**
 * The farm at a glance: tasks by status, clients, utilization (the seed's metrics object)
 * and throughput. Throughput is the change of the finished-task counts between samples,
 * kept in a bounded ring in memory: counting by status is one indexed query however many
 * tasks finished, where bucketing finish times would scan them all.
 */
export class OverviewService {
  private readonly history: ThroughputPoint[] = [];
  private last: Counts | undefined;
  private readonly maxPoints: number;
  private readonly source: SeedMetricsSource | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    opts: OverviewOptions = {},
  ) {
    this.maxPoints = opts.historyPoints ?? 720;
    this.source = opts.metrics;
  }

  /** The current overview, with the full throughput history. */
  async current(): Promise<Overview> {
    return { ...(await this.snapshot()), throughput: [...this.history] };
  }

  /**
   * Takes a throughput sample (call at a steady interval) and returns the overview with
   * only the new point, or none on the first call.
   */
  async sample(): Promise<Overview> {
    const snap = await this.snapshot();
    const by = snap.tasks.by_status;
    const now: Counts = {
      t: this.clock.now().getTime(),
      finished: by.completed ?? 0,
      failed: (by.failed ?? 0) + (by.error ?? 0),
    };
    const prev = this.last;
    this.last = now;
    if (!prev || now.t <= prev.t) return { ...snap, throughput: [] };
    const perMin = 60_000 / (now.t - prev.t);
    // Deleting finished tasks lowers the counts: that is not negative throughput.
    const point: ThroughputPoint = {
      at: snap.at,
      completed_per_min: round(Math.max(0, now.finished - prev.finished) * perMin),
      failed_per_min: round(Math.max(0, now.failed - prev.failed) * perMin),
    };
    this.history.push(point);
    if (this.history.length > this.maxPoints) this.history.splice(0, this.history.length - this.maxPoints);
    return { ...snap, throughput: [point] };
  }

  /** Everything but throughput. */
  async snapshot(): Promise<Omit<Overview, 'throughput'>> {
    const [byStatus, clients, loads] = await Promise.all([
      repo.countTasksByStatus(this.db),
      repo.countClients(this.db),
      // With a metrics source the loads go unused: no read of every connected client's row.
      this.source ? [] : repo.connectedClientLoads(this.db),
    ]);
    const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
    const seed = await this.source?.overview();
    return {
      at: this.clock.now().toISOString(),
      tasks: { total, by_status: byStatus },
      clients,
      metrics: seed ? fromSeed(seed.farm) : farmMetrics(loads, byStatus.running ?? 0, clients.connected),
      server: seed ? { cpu_utilization: seed.cpu_utilization, ram_utilization: seed.ram_utilization } : null,
    };
  }
}

const round = (n: number): number => Math.round(n * 100) / 100;

/** GET /api/metrics' farm figures in the overview's terms: no connected client means unknown, not 0%. */
function fromSeed(f: Awaited<ReturnType<SeedMetricsSource['overview']>>['farm']): FarmMetrics {
  const none = f.connected_clients === 0;
  return {
    cpu_utilization: none ? null : f.cpu_utilization,
    ram_utilization: none ? null : f.ram_utilization,
    gpu_utilization: f.gpu_utilization.map((g) => ({
      id: g.client_id ? `${g.client_id}:${String(g.id)}` : String(g.id),
      utilization: g.utilization,
      memory_used: g.memory_used,
    })),
    active_tasks: f.active_tasks,
    connected_clients: f.connected_clients,
  };
}

/** A number in [0, 100], or null. */
function pct(v: unknown): number | null {
  if (Array.isArray(v)) {
    const nums = v.map(pct).filter((n): n is number => n !== null);
    return nums.length ? nums.reduce((a, b) => a + b, 0) / nums.length : null;
  }
  return typeof v === 'number' && Number.isFinite(v) ? Math.min(100, Math.max(0, v)) : null;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/**
 * The seed's metrics for the farm: the mean CPU and RAM utilization of connected clients
 * and every GPU. Prefers the heartbeat's utilization and falls back on the system info
 * the original client sends (cpu.usage_percent, ram.percent, gpu[].load in 0..1).
 */
export function farmMetrics(loads: repo.ClientLoadRow[], running: number, connected: number): FarmMetrics {
  const cpu: number[] = [];
  const ram: number[] = [];
  const gpus: FarmMetrics['gpu_utilization'] = [];
  for (const row of loads) {
    const util = obj(parseJson(row.utilization));
    const c = pct(util.cpu_utilization) ?? pct(obj(parseJson(row.cpu_info)).usage_percent);
    const r = pct(util.ram_utilization) ?? pct(obj(parseJson(row.ram_info)).percent);
    if (c !== null) cpu.push(c);
    if (r !== null) ram.push(r);
    const reported = Array.isArray(util.gpu_utilization) ? util.gpu_utilization : null;
    if (reported) {
      for (const g of reported.map(obj)) {
        const u = pct(g.utilization);
        if (u !== null)
          gpus.push({
            id: `${row.id}:${String(g.id)}`,
            utilization: u,
            memory_used: typeof g.memory_used === 'number' ? g.memory_used : null,
          });
      }
    } else {
      const info = parseJson(row.gpu_info);
      for (const [i, g] of (Array.isArray(info) ? info : []).map(obj).entries()) {
        const u = typeof g.load === 'number' ? pct(g.load * 100) : null;
        const used = obj(g.memory).used;
        if (u !== null)
          gpus.push({
            id: `${row.id}:${String(g.id ?? i)}`,
            utilization: u,
            memory_used: typeof used === 'number' ? used : null,
          });
      }
    }
  }
  const mean = (xs: number[]) => (xs.length ? round(xs.reduce((a, b) => a + b, 0) / xs.length) : null);
  return {
    cpu_utilization: mean(cpu),
    ram_utilization: mean(ram),
    gpu_utilization: gpus,
    active_tasks: running,
    connected_clients: connected,
  };
}
