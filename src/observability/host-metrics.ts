import { cpus, freemem, totalmem } from 'node:os';

/** The seed's metrics object. */
export interface SeedMetrics {
  cpu_utilization: number;
  ram_utilization: number;
  gpu_utilization: { id: number | string; utilization: number; memory_used: number; client_id?: string }[];
  active_tasks: number;
  connected_clients: number;
}

/** CPU utilization of this host since the previous call, in percent. */
export class CpuSampler {
  private last = snapshot();

  sample(): number {
    const now = snapshot();
    const idle = now.idle - this.last.idle;
    const total = now.total - this.last.total;
    this.last = now;
    return total > 0 ? round1(100 * (1 - idle / total)) : 0;
  }
}

function snapshot(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, total };
}

export function hostRamUtilization(): number {
  return round1(100 * (1 - freemem() / totalmem()));
}

export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
