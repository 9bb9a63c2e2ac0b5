import { describe, expect, it } from 'vitest';
import {
  accumulatePairwiseSquared,
  krumScores,
  krumSelect,
  meanChunk,
  medianChunk,
  sortPrefix,
  trimCount,
  trimmedMeanChunk,
  weightedAccumulate,
} from './math.js';

const f32 = (...v: number[]): Float32Array => Float32Array.from(v);
const run = (fn: (out: Float32Array) => void, n: number): number[] => {
  const out = new Float32Array(n);
  fn(out);
  return Array.from(out);
};

describe('coordinate-wise kernels', () => {
  const three = [f32(1, 2, 3, 4, 5), f32(2, 2, 2, 2, 2), f32(10, -1, 3, 0, 100)];

  it('median of three updates of 5 floats', () => {
    expect(run((o) => medianChunk(three, 5, o), 5)).toEqual([2, 2, 3, 2, 5]);
  });

  it('median of an even count averages the middle pair', () => {
    const four = [...three, f32(0, 0, 0, 0, 0)];
    // Sorted columns: [0,1,2,10] [-1,0,2,2] [0,2,3,3] [0,0,2,4] [0,2,5,100]
    expect(run((o) => medianChunk(four, 5, o), 5)).toEqual([1.5, 1, 2.5, 1, 3.5]);
  });

  it('trimmed mean drops trim values at each end', () => {
    const five = [...three, f32(0, 0, 0, 0, 0), f32(4, 4, 4, 4, 4)];
    // Sorted columns: [0,1,2,4,10] [-1,0,2,2,4] [0,2,3,3,4] [0,0,2,4,4] [0,2,4,5,100]
    expect(run((o) => trimmedMeanChunk(five, 5, 1, o), 5)).toEqual(
      [7 / 3, 4 / 3, 8 / 3, 2, 11 / 3].map(Math.fround),
    );
    expect(run((o) => trimmedMeanChunk(five, 5, 0, o), 5)).toEqual(run((o) => meanChunk(five, 5, o), 5));
    expect(run((o) => trimmedMeanChunk(five, 5, 2, o), 5)).toEqual(run((o) => medianChunk(five, 5, o), 5));
    expect(() => trimmedMeanChunk(five, 5, 3, new Float32Array(5))).toThrow(RangeError);
    expect(trimCount(5, { beta: 0.2 })).toBe(1);
    expect(trimCount(5, { beta: 0.39 })).toBe(1);
    expect(trimCount(5, { trim: 2 })).toBe(2);
  });

  it('sorts long columns with the native sort', () => {
    const a = Float64Array.from({ length: 50 }, (_, i) => (i * 37) % 50);
    sortPrefix(a, 50);
    expect(Array.from(a)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('accumulates a weighted sum in float64', () => {
    const sum = new Float64Array(4);
    weightedAccumulate(sum, 1, f32(1, 2, 3), 3, 0.5);
    weightedAccumulate(sum, 0, f32(1, 1), 2, 2);
    expect(Array.from(sum)).toEqual([2, 2.5, 1, 1.5]);
  });
});

describe('Krum', () => {
  // Five updates whose 5 coordinates all equal v: squared distance = 5 (vi - vj)^2.
  const values = [0, 1, 2, 3, 100];
  const cols = values.map((v) => new Float32Array(5).fill(v));

  it('accumulates pairwise squared distances over chunks', () => {
    const whole = new Float64Array(25);
    accumulatePairwiseSquared(cols, 5, whole);
    const parts = new Float64Array(25);
    accumulatePairwiseSquared(
      cols.map((c) => c.subarray(0, 2)),
      2,
      parts,
    );
    accumulatePairwiseSquared(
      cols.map((c) => c.subarray(2)),
      3,
      parts,
    );
    expect(parts).toEqual(whole);
    expect(whole[0 * 5 + 1]).toBe(5);
    expect(whole[0 * 5 + 4]).toBe(50000);
    expect(whole[1 * 5 + 0]).toBe(0); // only the upper triangle is used
  });

  it('scores by the n - f - 2 nearest and selects the lowest', () => {
    const dist = new Float64Array(25);
    accumulatePairwiseSquared(cols, 5, dist);
    const candidates = [0, 1, 2, 3, 4];
    // f = 1: k = 2 nearest. 0: 5+20, 1: 5+5, 2: 5+5, 3: 5+20, 4: 5*97^2 + 5*98^2.
    const scores = krumScores(dist, 5, candidates, 1);
    expect(scores).toEqual([25, 10, 10, 25, 47045 + 48020]);
    expect(krumSelect(candidates, scores, 1)).toEqual([1]); // tie goes to the earlier input
    expect(krumSelect(candidates, scores, 3)).toEqual([0, 1, 2]);
    expect(() => krumScores(dist, 5, candidates, 2)).toThrow(/2f \+ 3/);
  });

  it('skips rows marked bad', () => {
    const dist = new Float64Array(25);
    accumulatePairwiseSquared(cols, 5, dist, [false, true, false, false, false]);
    expect(dist[0 * 5 + 1]).toBe(0);
    expect(dist[0 * 5 + 2]).toBe(20);
  });
});
