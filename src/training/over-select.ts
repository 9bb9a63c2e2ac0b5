/**
 * `over_select` (docs/training.md, "Stragglers: over-selection"): a sync round runs on more
 * ranks than the K updates that close it, and refuses the late ones. Used by the config checks,
 * by a Round's fill and by the sampler (a sampled round samples K plus the extras).
 */

/** An integer O >= 1 is O extra ranks; a fraction 0 < x < 1 is ceil(x K). */
export function overSelectExtra(overSelect: number | undefined, k: number): number {
  if (overSelect === undefined) return 0;
  return overSelect >= 1 ? overSelect : Math.ceil(overSelect * k);
}

/**
 * The updates that close a sync round run on `ranks` ranks: K, the largest k >= 1 with
 * k + overSelectExtra(k) <= ranks (the ranks beyond K are the round's over-selection);
 * 0 when even one update leaves no room for the extras.
 */
export function syncFill(overSelect: number | undefined, ranks: number): number {
  let k = ranks;
  while (k >= 1 && k + overSelectExtra(overSelect, k) > ranks) k--;
  return k;
}

/** Checks `over_select` against the mode and world size; answers K (world_size without it). */
export function checkOverSelect(
  o: number | undefined,
  mode: 'sync' | 'async',
  worldSize: number,
): { ok: true; k: number } | { ok: false; message: string } {
  if (o === undefined) return { ok: true, k: worldSize };
  if (mode === 'async') {
    return {
      ok: false,
      message:
        'applies only with mode "sync": an async round already closes on its first buffer_size updates, whichever ranks send them',
    };
  }
  if (o >= 1 && !Number.isInteger(o))
    return { ok: false, message: `(${o}) must be an integer >= 1 (extra ranks) or a fraction 0 < x < 1` };
  const k = syncFill(o, worldSize);
  if (k < 1) {
    return {
      ok: false,
      message: `(${o}) leaves no update to close a round: world_size ${worldSize} must exceed the extra ranks`,
    };
  }
  return { ok: true, k };
}
