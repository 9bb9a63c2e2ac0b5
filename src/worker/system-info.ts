import os from 'node:os';
import si from 'systeminformation';
import type { SystemInfo, Utilization } from '../api/protocol.js';

type GpuInfo = NonNullable<SystemInfo['gpu']>[number];

/** What a worker adds to its hardware: its session's counters. */
export interface SessionInfo {
  created_at: string;
  total_tasks_completed: number;
  performance_metrics: Record<string, unknown>;
  [key: string]: unknown;
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/** NVIDIA GPUs only: the scheduler counts CUDA devices, and other vendors report no load. */
function nvidiaGpus(controllers: si.Systeminformation.GraphicsControllerData[]): GpuInfo[] {
  return controllers
    .filter((c) => /nvidia/i.test(`${c.vendor} ${c.model} ${c.name ?? ''}`))
    .map((c, i) => {
      const total = c.memoryTotal ?? c.vram ?? 0;
      const used = c.memoryUsed ?? 0;
      return {
        // CUDA's device order is nvidia-smi's, which is the order si lists them in.
        id: i,
        name: c.name ?? c.model,
        load: c.utilizationGpu !== undefined ? round(c.utilizationGpu / 100, 3) : 0,
        memory: { total, used, free: c.memoryFree ?? Math.max(0, total - used) },
        temperature: c.temperatureGpu ?? null,
      };
    });
}

/**
 * This machine's hardware in the original AI Farm client's system-info shape: sizes in
 * bytes, frequencies in MHz, GPU memory in MB and load 0..1, `gpu: null` without an
 * NVIDIA GPU. Reads the hardware anew on each call (RAM and GPU use change).
 */
export async function collectSystemInfo(session?: SessionInfo): Promise<SystemInfo> {
  const [cpu, speed, mem, load, graphics] = await Promise.all([
    si.cpu(),
    si.cpuCurrentSpeed(),
    si.mem(),
    si.currentLoad(),
    si.graphics().catch(() => ({ controllers: [] })),
  ]);
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim();
  const mhz = (ghz: number | undefined) => (ghz ? round(ghz * 1000, 0) : 0);
  const currentMhz = mhz(speed.avg) || (cpus[0]?.speed ?? 0);
  const gpus = nvidiaGpus(graphics.controllers);
  return {
    hostname: os.hostname(),
    platform: {
      system: os.type(),
      release: os.release(),
      version: os.version(),
      machine: os.machine(),
      processor: os.machine(),
    },
    cpu: {
      brand: model || `${cpu.manufacturer} ${cpu.brand}`.trim(),
      cores_physical: cpu.physicalCores || null,
      cores_logical: Math.max(1, cpu.cores || cpus.length),
      frequency: { current: currentMhz, min: mhz(cpu.speedMin), max: mhz(cpu.speedMax) || currentMhz },
      usage_percent: round(load.currentLoad),
    },
    ram: {
      total: mem.total,
      available: mem.available,
      used: mem.total - mem.available,
      percent: mem.total ? round(((mem.total - mem.available) / mem.total) * 100) : 0,
    },
    gpu: gpus.length ? gpus : null,
    session: session ?? {
      created_at: new Date().toISOString(),
      total_tasks_completed: 0,
      performance_metrics: {},
    },
  };
}

/** Utilization for a heartbeat, in percent (GPU memory used in MB). */
export async function collectUtilization(): Promise<Utilization> {
  const [load, mem, graphics] = await Promise.all([
    si.currentLoad(),
    si.mem(),
    si.graphics().catch(() => ({ controllers: [] })),
  ]);
  const clamp = (n: number) => Math.min(100, Math.max(0, round(n)));
  const u: Utilization = {
    cpu_utilization: clamp(load.currentLoad),
    ram_utilization: clamp(mem.total ? ((mem.total - mem.available) / mem.total) * 100 : 0),
  };
  const gpus = nvidiaGpus(graphics.controllers);
  if (gpus.length) {
    u.gpu_utilization = gpus.map((g) => ({
      id: g.id ?? 0,
      utilization: clamp((g.load ?? 0) * 100),
      memory_used: Math.max(0, g.memory?.used ?? 0),
    }));
  }
  return u;
}
