import type { Utilization } from '../api/protocol.js';

const percent = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isFinite(v) ? Math.min(100, Math.max(0, v)) : undefined;

const obj = (v: unknown): Record<string, unknown> | undefined =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * Utilization from the `system_info` the original AI Farm client sends with its heartbeats:
 * its system-info object (cpu.usage_percent, ram.percent, gpu[].load in 0..1 and
 * gpu[].memory.used in MB), or the flat `{cpu_usage, ram_usage, gpu_usage}` of its API docs.
 * Null when it holds none of them (its client sends `{id, error}` when it cannot read them).
 */
export function utilizationFromSystemInfo(info: Record<string, unknown>): Utilization | null {
  const out: Utilization = {};
  const cpu = percent(obj(info.cpu)?.usage_percent) ?? percent(info.cpu_usage);
  const ram = percent(obj(info.ram)?.percent) ?? percent(info.ram_usage);
  if (cpu !== undefined) out.cpu_utilization = cpu;
  if (ram !== undefined) out.ram_utilization = ram;
  const gpus: NonNullable<Utilization['gpu_utilization']> = [];
  if (Array.isArray(info.gpu)) {
    for (const [i, raw] of info.gpu.slice(0, 64).entries()) {
      const g = obj(raw);
      const load = typeof g?.load === 'number' ? percent(g.load * 100) : undefined;
      if (!g || load === undefined) continue;
      const id = typeof g.id === 'number' || typeof g.id === 'string' ? g.id : i;
      const used = obj(g.memory)?.used;
      gpus.push({
        id,
        utilization: load,
        ...(typeof used === 'number' && Number.isFinite(used) && used >= 0 ? { memory_used: used } : {}),
      });
    }
  } else {
    const gpu = percent(info.gpu_usage);
    if (gpu !== undefined) gpus.push({ id: 0, utilization: gpu });
  }
  if (gpus.length > 0) out.gpu_utilization = gpus;
  return Object.keys(out).length > 0 ? out : null;
}
