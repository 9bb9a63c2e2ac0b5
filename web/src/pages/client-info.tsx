import type { Client } from '../../../src/api/clients.js';
import { bytes, num, obj, str } from '../format.js';

/** What a client reported about its hardware, read defensively (any worker may send it). */
export interface Hardware {
  cpu: string;
  cores: number | null;
  ramTotal: number | null;
  gpus: { name: string; memoryMb: number | null }[];
  platform: string | null;
}

export function hardware(c: Client): Hardware {
  const cpu = obj(c.cpu_info);
  const ram = obj(c.ram_info);
  const plat = obj(obj(c.session_info).platform ?? (c as unknown as Record<string, unknown>).platform);
  const gpus = Array.isArray(c.gpu_info) ? c.gpu_info.map(obj) : [];
  return {
    cpu: str(cpu.brand) ?? 'CPU',
    cores: num(cpu.cores_logical),
    ramTotal: num(ram.total),
    gpus: gpus.map((g) => ({ name: str(g.name) ?? 'GPU', memoryMb: num(obj(g.memory).total) })),
    platform: str(plat.system) ? `${String(plat.system)} ${str(plat.release) ?? ''}`.trim() : null,
  };
}

/** Latest utilization: the heartbeat's figures, else what the system info said. */
export function utilization(c: Client): { cpu: number | null; ram: number | null; gpus: number[] } {
  const u = obj(c.utilization);
  const cpuInfo = obj(c.cpu_info);
  const usage = cpuInfo.usage_percent;
  const cpuFallback = Array.isArray(usage)
    ? usage
        .map(num)
        .filter((x): x is number => x !== null)
        .reduce((a, b, _i, all) => a + b / all.length, 0)
    : num(usage);
  const gpuU = Array.isArray(u.gpu_utilization) ? u.gpu_utilization.map((g) => num(obj(g).utilization)) : [];
  const gpuInfo = Array.isArray(c.gpu_info)
    ? c.gpu_info.map((g) => num(obj(g).load)).map((l) => (l === null ? null : l * 100))
    : [];
  return {
    cpu: num(u.cpu_utilization) ?? cpuFallback,
    ram: num(u.ram_utilization) ?? num(obj(c.ram_info).percent),
    gpus: (gpuU.length ? gpuU : gpuInfo).filter((x): x is number => x !== null),
  };
}

export function hardwareSummary(h: Hardware): string {
  const parts = [`${h.cores ?? '?'} cores`, bytes(h.ramTotal)];
  if (h.gpus.length) parts.push(`${h.gpus.length}× ${h.gpus[0]?.name ?? 'GPU'}`);
  return parts.join(' · ');
}

/** The label people read: connected / cordoned / offline. */
export function clientState(c: Client): 'connected' | 'cordoned' | 'offline' {
  if (c.cordoned) return 'cordoned';
  return c.connected ? 'connected' : 'offline';
}
