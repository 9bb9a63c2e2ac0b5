/**
 * Which clients a sampled training round trains on (docs/training.md, "Clients sampled per
 * round"). Pure: the caller gives the eligible clients, each with its recent round times,
 * and a random source (seeded, so a round's sample can be reproduced).
 */

/** An eligible client, with its recent round times on this task. */
export interface SampleCandidate {
  id: string;
  /** Seconds from round open to its accepted update, in its last few rounds of the task (newest last). */
  seconds?: readonly number[];
}

/** A client chosen for a round, and why. */
export interface Sampled {
  clientId: string;
  reason: string;
}

export type SamplingMethod = 'uniform' | 'speed';

/** Rounds of history a client's speed weight looks at. */
export const SPEED_HISTORY = 3;

/** A deterministic random source in [0, 1) from integers (mulberry32 over a mix of them). */
export function seededRandom(...parts: number[]): () => number {
  let a = 0x9e3779b9;
  for (const p of parts) a = Math.imul(a ^ (p | 0), 0x85ebca6b) ^ (a >>> 13);
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The median of some numbers (undefined for none). */
export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** A client's speed weight and what it came from. */
export interface SpeedWeight {
  weight: number;
  /** Median seconds over `rounds` recent rounds; undefined without history. */
  median?: number;
  rounds: number;
}

/**
 * Speed weights, relative to the highest (1): 1 / the median of a client's last SPEED_HISTORY
 * round times; a client without history gets the highest weight (explore); no weight is
 * below `floor` x the highest, so no client starves.
 */
export function speedWeights(
  candidates: readonly SampleCandidate[],
  floor: number,
): Map<string, SpeedWeight> {
  const raw = new Map<string, SpeedWeight>();
  let top = 0;
  for (const c of candidates) {
    const recent = (c.seconds ?? []).slice(-SPEED_HISTORY);
    const m = median(recent);
    // A round time of 0 (clock granularity) counts as a millisecond.
    const w = m === undefined ? Infinity : 1 / Math.max(m, 0.001);
    if (w !== Infinity) top = Math.max(top, w);
    raw.set(c.id, { weight: w, rounds: recent.length, ...(m !== undefined ? { median: m } : {}) });
  }
  for (const v of raw.values()) {
    const relative = v.weight === Infinity || top === 0 ? 1 : v.weight / top;
    v.weight = Math.max(relative, floor);
  }
  return raw;
}

/**
 * Samples `n` distinct clients among `candidates` (all of them when fewer). Uniform: each
 * equally likely. Speed: weighted by speedWeights, without replacement (each client's key is
 * u^(1/weight), the n largest win: Efraimidis and Spirakis). Candidates are taken in id order,
 * so the same clients and random source give the same sample.
 */
export function sampleClients(
  method: SamplingMethod,
  candidates: readonly SampleCandidate[],
  n: number,
  random: () => number,
  floor: number,
): Sampled[] {
  const sorted = [...candidates].sort((a, b) => a.id.localeCompare(b.id));
  const k = Math.min(n, sorted.length);
  if (method === 'uniform') {
    const ids = sorted.map((c) => c.id);
    // A partial Fisher-Yates shuffle: the first k places are a uniform sample.
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(random() * (ids.length - i));
      [ids[i], ids[j]] = [ids[j] as string, ids[i] as string];
    }
    const why = `uniform: ${k} of ${ids.length} eligible`;
    return ids.slice(0, k).map((clientId) => ({ clientId, reason: why }));
  }
  const weights = speedWeights(sorted, floor);
  const keyed = sorted.map((c) => {
    const w = weights.get(c.id) as SpeedWeight;
    return { c, w, key: Math.pow(random(), 1 / w.weight) };
  });
  keyed.sort((a, b) => b.key - a.key);
  return keyed.slice(0, k).map(({ c, w }) => ({ clientId: c.id, reason: speedReason(w, sorted.length) }));
}

function speedReason(w: SpeedWeight, eligible: number): string {
  const weight = Number(w.weight.toFixed(2));
  if (w.median === undefined) return `speed: weight ${weight} (no history: explore; ${eligible} eligible)`;
  const s = Number(w.median.toFixed(1));
  return `speed: weight ${weight} (median ${s} s over ${w.rounds} round${w.rounds === 1 ? '' : 's'}; ${eligible} eligible)`;
}
