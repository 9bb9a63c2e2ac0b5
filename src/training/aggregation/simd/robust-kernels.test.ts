import { describe, expect, it } from 'vitest';
import { accumulatePairwiseSquared, medianChunk, trimmedMeanChunk } from '../math.js';
import {
  MAX_NETWORK_UPDATES,
  createRobustKernels,
  robustScratchBytes,
  sortingNetwork,
} from './robust-kernels.js';

// The SIMD robust kernels against the scalar reference (math.ts).

function applyNetwork(values: number[], pairs: Int32Array): number[] {
  const v = [...values];
  for (let k = 0; k < pairs.length; k += 2) {
    const [lo, hi] = [pairs[k]!, pairs[k + 1]!];
    if (v[lo]! > v[hi]!) [v[lo], v[hi]] = [v[hi]!, v[lo]!];
  }
  return v;
}

/** n columns of `count` float32 values in a fresh memory, and the kernels over it. */
function setup(n: number, count: number, value: (member: number, i: number) => number) {
  const column = Math.ceil((count * 4) / 64) * 64;
  const scratch = (n + 1) * column;
  const pages = Math.ceil((scratch + robustScratchBytes(n)) / 65536);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  const cols = Array.from({ length: n }, (_, m) => m * column);
  const views = cols.map((c) => new Float32Array(memory.buffer, c, count));
  views.forEach((v, m) => v.forEach((_, i) => (v[i] = value(m, i))));
  const out = n * column;
  return {
    kernels: createRobustKernels(memory, scratch, n),
    cols,
    views,
    out,
    result: new Float32Array(memory.buffer, out, count),
  };
}

let seed = 12345;
const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
/** Wide magnitudes, both signs, zeros of both signs and repeated values. */
const sample = (m: number, i: number) => {
  const r = random();
  if (r < 0.05) return r < 0.025 ? 0 : -0;
  if (r < 0.1) return (i % 3) - 1;
  return (random() - 0.5) * 10 ** Math.floor(random() * 12 - 6) + m * 1e-9;
};
/** Same numbers; a zero's sign may differ (see robust-kernels.ts). */
const sameValues = (a: Float32Array, b: Float32Array) => Array.from(a).every((v, i) => v === b[i]);

describe('sortingNetwork', () => {
  it('sorts every 0/1 input up to 14 values (so every input: the 0-1 principle)', () => {
    for (let n = 1; n <= 14; n++) {
      const net = sortingNetwork(n);
      for (let bits = 0; bits < 1 << n; bits++) {
        const v = Array.from({ length: n }, (_, i) => (bits >> i) & 1);
        expect(applyNetwork(v, net)).toEqual([...v].sort());
      }
    }
  });

  it('sorts random inputs up to the largest network', () => {
    for (const n of [15, 16, 17, 31, 33, 100, 129, MAX_NETWORK_UPDATES]) {
      const v = Array.from({ length: n }, random);
      expect(applyNetwork(v, sortingNetwork(n))).toEqual([...v].sort((a, b) => a - b));
    }
  });
});

describe('robust SIMD kernels', () => {
  // Counts not multiples of 4: the scalar tail runs too; one N above the network's limit.
  for (const n of [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, MAX_NETWORK_UPDATES + 3]) {
    it(`give the reference's median, trimmed means and mean of ${n} updates`, () => {
      const count = n > 64 ? 41 : 1001;
      const s = setup(n, count, sample);
      const want = new Float32Array(count);
      s.kernels.median(s.cols, count, s.out);
      medianChunk(s.views, count, want);
      expect(sameValues(s.result, want)).toBe(true);
      for (const trim of [0, 1, Math.floor((n - 1) / 2)].filter((t) => 2 * t < n)) {
        s.kernels.trimmedMean(s.cols, count, trim, s.out);
        trimmedMeanChunk(s.views, count, trim, want);
        expect(sameValues(s.result, want)).toBe(true);
      }
    });
  }

  it('give the reference median of a subset of the columns, in any order', () => {
    const s = setup(9, 203, sample);
    const members = [7, 0, 3, 4, 8];
    const want = new Float32Array(203);
    s.kernels.median(
      members.map((m) => s.cols[m]!),
      203,
      s.out,
    );
    medianChunk(
      members.map((m) => s.views[m]!),
      203,
      want,
    );
    expect(sameValues(s.result, want)).toBe(true);
  });

  it('say whether every input was finite: a NaN or an infinity anywhere is seen', () => {
    for (const n of [1, 2, 5, 8]) {
      const count = 203;
      for (const [member, at, value] of [
        [n - 1, 17, NaN],
        [0, 100, Infinity],
        [n >> 1, 0, -Infinity],
        [n - 1, 201, NaN], // in the scalar tail
        [-1, 0, 0], // none
      ] as const) {
        const s = setup(n, count, () => random() - 0.5);
        if (member >= 0) s.views[member]![at] = value;
        const finite = member < 0;
        expect(s.kernels.median(s.cols, count, s.out)).toBe(finite);
        if (n >= 3) expect(s.kernels.trimmedMean(s.cols, count, 1, s.out)).toBe(finite);
        // The plain mean sorts nothing: it can vouch for one column only.
        expect(s.kernels.trimmedMean(s.cols, count, 0, s.out)).toBe(finite && n === 1);
      }
    }
    const big = setup(MAX_NETWORK_UPDATES + 1, 9, () => 1);
    expect(big.kernels.median(big.cols, 9, big.out)).toBe(false);
  });

  it('give the squared distances within rounding of the reference', () => {
    for (const count of [0, 1, 3, 4, 999]) {
      const s = setup(4, Math.max(count, 1), sample);
      const dist = new Float64Array(16);
      accumulatePairwiseSquared(
        s.views.map((v) => v.subarray(0, count)),
        count,
        dist,
      );
      for (let i = 0; i < 4; i++)
        for (let j = i + 1; j < 4; j++) {
          const got = s.kernels.squaredDistance(s.cols[i]!, s.cols[j]!, count);
          expect(Math.abs(got - dist[i * 4 + j]!)).toBeLessThanOrEqual(dist[i * 4 + j]! * 1e-12);
        }
    }
  });
});
