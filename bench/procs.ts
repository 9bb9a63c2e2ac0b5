import { readdirSync, readFileSync } from 'node:fs';
import type { CpuUse } from './common.js';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const TICKS = 100;

/** Pids of processes whose command name is one of `names` (for database servers' CPU). */
export function pidsNamed(names: readonly string[]): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const comm = readFileSync(`/proc/${e}/comm`, 'utf8').trim();
      if (names.includes(comm)) out.push(Number(e));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return out;
}

/** User and system CPU seconds of these processes so far (null when unreadable). */
export function cpuOf(pids: readonly number[]): CpuUse | null {
  if (pids.length === 0) return null;
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the ")" closing the command name: utime is the 12th, stime the 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      user += Number(fields[11]) / TICKS;
      system += Number(fields[12]) / TICKS;
    } catch {
      return null;
    }
  }
  return { user, system };
}

export function cpuDelta(after: CpuUse | null, before: CpuUse | null): CpuUse | null {
  if (!after || !before) return null;
  return { user: after.user - before.user, system: after.system - before.system };
}

/** This process's CPU seconds so far. */
export function selfCpu(): CpuUse {
  const u = process.cpuUsage();
  return { user: u.user / 1e6, system: u.system / 1e6 };
}
