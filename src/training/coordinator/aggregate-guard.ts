/**
 * Guards between a round's updates and its published aggregate: a cap on the share of the
 * round's weight one rank's self-reported sample count may carry, and a finiteness check of the
 * aggregate before it is recorded (docs/training.md, "Weights"; docs/security.md).
 */
import { readHeaderFile, scanFinite } from '../safetensors/read.js';

/**
 * FedAvg weights with no weight above `cap` of their total: the largest are lowered to a common
 * ceiling T (water-filling), the others kept, so sum(min(w, T)) * cap = T. With `cap` >= 1 the
 * weights are returned unchanged; when `cap` x n <= 1 no ceiling can satisfy it and every weight
 * becomes 1 (the plain mean, the fairest share available). Weights must be positive and finite.
 */
export function capWeightShares(weights: readonly number[], cap: number): number[] {
  const n = weights.length;
  if (cap >= 1 || n === 0) return [...weights];
  if (cap * n <= 1) return weights.map(() => 1);
  const desc = [...weights].sort((a, b) => b - a);
  let rest = desc.reduce((s, w) => s + w, 0);
  // k = how many of the largest weights are lowered to the ceiling.
  for (let k = 0; k < n && cap * k < 1; k++) {
    const ceiling = (cap * rest) / (1 - cap * k);
    if (desc[k]! <= ceiling) return weights.map((w) => Math.min(w, ceiling));
    rest -= desc[k]!;
  }
  return weights.map(() => 1);
}

/** What {@link checkFiniteModel} found. */
export type FiniteCheck = { ok: true } | { ok: false; message: string };

/**
 * Reads the aggregate at `path` and reports its first NaN or Inf. A float32 running sum can
 * overflow on finite updates (two ranks near 3.4e38, or large weights), so no aggregate is
 * recorded, served or checkpointed before this passes.
 */
export async function checkFiniteModel(path: string): Promise<FiniteCheck> {
  const header = await readHeaderFile(path);
  if (!header.ok) return { ok: false, message: `the aggregate is not valid safetensors: ${header.message}` };
  const scan = await scanFinite(path, header.header);
  return scan.ok ? { ok: true } : { ok: false, message: `the aggregate is not finite: ${scan.message}` };
}
