/**
 * Requirements in the original AI Farm's words. Its client reads
 * `task['requirements']['min_gpu_memory']`, `['min_cpu_cores']` and `['min_ram']` before it
 * runs a task (a missing key fails the task), and its resource manager compares them in GiB
 * (free GPU memory / 1024, available RAM / 1024^3) and cores: the units of our own
 * min_gpu_memory_gb, min_cpu_cores and min_ram_gb, so aliasing is a rename, not a conversion.
 */
import type { Requirements } from '../api/tasks.js';
import { badRequest, type AppError } from '../errors.js';
import type { TaskRequirements } from '../scheduling/policy.js';

/** The original's key -> ours. */
const ALIASES = { min_ram: 'min_ram_gb', min_gpu_memory: 'min_gpu_memory_gb' } as const;

/**
 * Requirements with the original's keys renamed to ours, or a 400 when both spellings of
 * one requirement are given with different values.
 */
export function normalizeRequirements(
  req: Requirements,
): { ok: true; requirements: TaskRequirements } | { ok: false; error: AppError } {
  const out: Record<string, number | undefined> = { ...req };
  for (const [theirs, ours] of Object.entries(ALIASES) as [keyof typeof ALIASES, string][]) {
    const value = req[theirs];
    delete out[theirs];
    if (value === undefined) continue;
    const own = out[ours];
    if (own !== undefined && own !== value) {
      return {
        ok: false,
        error: badRequest(
          'conflicting_requirements',
          `requirements.${theirs} (${value}) and requirements.${ours} (${own}) name the same requirement with different values`,
        ),
      };
    }
    out[ours] = value;
  }
  return { ok: true, requirements: out as TaskRequirements };
}

/** The keys the original client reads, as a task frame carries them beside ours. */
export interface OriginalRequirementKeys {
  /** GiB of free GPU memory; 0: no GPU needed. */
  min_gpu_memory: number;
  /** Logical cores; 1 when the task names none (every machine has one). */
  min_cpu_cores: number;
  /** GiB of RAM; 0 when the task names none. */
  min_ram: number;
}

/**
 * Stored (our) requirements plus the original's keys. Values the task does not name get
 * the neutral value every machine meets, never the original's default of 1 GiB RAM, which
 * would refuse tasks we scheduled on a machine with less free.
 */
export function withOriginalKeys(stored: Record<string, unknown>): Record<string, unknown> {
  const num = (v: unknown): number | undefined =>
    typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  const keys: OriginalRequirementKeys = {
    min_gpu_memory: num(stored.min_gpu_memory_gb) ?? 0,
    min_cpu_cores: num(stored.min_cpu_cores) ?? 1,
    min_ram: num(stored.min_ram_gb) ?? 0,
  };
  return { ...stored, ...keys };
}
