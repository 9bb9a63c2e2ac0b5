import { describe, expect, it } from 'vitest';
import { median, sampleClients, seededRandom, speedWeights, type SampleCandidate } from './sampling.js';

const ids = (n: number): SampleCandidate[] =>
  Array.from({ length: n }, (_, i) => ({ id: `c${String(i).padStart(2, '0')}` }));

describe('seededRandom', () => {
  it('repeats for the same seed and round, differs for another round', () => {
    const a = seededRandom(7, 1);
    const b = seededRandom(7, 1);
    const c = seededRandom(7, 2);
    const xs = [a(), a(), a()];
    expect([b(), b(), b()]).toEqual(xs);
    expect([c(), c(), c()]).not.toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });
});

describe('uniform sampling', () => {
  it('picks n distinct clients, each about equally often over many rounds', () => {
    const counts = new Map<string, number>();
    const rounds = 4000;
    for (let r = 1; r <= rounds; r++) {
      const picks = sampleClients('uniform', ids(10), 3, seededRandom(1, r), 0.1);
      expect(new Set(picks.map((p) => p.clientId)).size).toBe(3);
      expect(picks[0]!.reason).toBe('uniform: 3 of 10 eligible');
      for (const p of picks) counts.set(p.clientId, (counts.get(p.clientId) ?? 0) + 1);
    }
    // Expected 1200 each (3/10 of 4000); binomial sd ~29, so +-150 is over 5 sd.
    expect(counts.size).toBe(10);
    for (const n of counts.values()) expect(Math.abs(n - 1200)).toBeLessThan(150);
  });

  it('is deterministic for a seed whatever the order clients are listed in', () => {
    const a = sampleClients('uniform', ids(8), 2, seededRandom(3, 5), 0.1);
    const b = sampleClients('uniform', ids(8).reverse(), 2, seededRandom(3, 5), 0.1);
    expect(b).toEqual(a);
  });

  it('takes every client when fewer are eligible than asked', () => {
    expect(sampleClients('uniform', ids(2), 5, seededRandom(0, 1), 0.1)).toHaveLength(2);
  });
});

describe('speed weights', () => {
  it('weighs 1 / median seconds relative to the fastest, floors the slow, explores the new', () => {
    const w = speedWeights(
      [
        { id: 'fast', seconds: [2, 100, 2, 2] }, // last 3: 100, 2, 2 -> median 2
        { id: 'half', seconds: [4, 4] },
        { id: 'slow', seconds: [1000] },
        { id: 'new' },
      ],
      0.1,
    );
    expect(w.get('fast')).toMatchObject({ weight: 1, median: 2, rounds: 3 });
    expect(w.get('half')!.weight).toBeCloseTo(0.5, 12);
    expect(w.get('slow')!.weight).toBe(0.1); // 0.002 without the floor
    expect(w.get('new')).toMatchObject({ weight: 1, rounds: 0 });
    expect(w.get('new')!.median).toBeUndefined();
  });

  it('gives everyone weight 1 when nobody has history', () => {
    const w = speedWeights(ids(3), 0.1);
    for (const v of w.values()) expect(v.weight).toBe(1);
  });

  it('samples fast clients more often, never starves a slow one, and says why', () => {
    const cands: SampleCandidate[] = [
      { id: 'a-fast', seconds: [1, 1, 1] },
      { id: 'b-slow', seconds: [100, 100, 100] },
      { id: 'c-mid', seconds: [2, 2, 2] },
    ];
    const counts = new Map<string, number>();
    for (let r = 1; r <= 3000; r++) {
      const [p] = sampleClients('speed', cands, 1, seededRandom(9, r), 0.1);
      counts.set(p!.clientId, (counts.get(p!.clientId) ?? 0) + 1);
    }
    // Weights 1, 0.1 (floored from 0.01), 0.5: first-pick probabilities 1/1.6, 0.1/1.6, 0.5/1.6.
    expect(counts.get('a-fast')! / 3000).toBeCloseTo(1 / 1.6, 1);
    expect(counts.get('c-mid')! / 3000).toBeCloseTo(0.5 / 1.6, 1);
    expect(counts.get('b-slow')! / 3000).toBeCloseTo(0.1 / 1.6, 1);
    const reasons = sampleClients(
      'speed',
      [{ id: 'x', seconds: [12, 12.3, 13] }, { id: 'y' }],
      2,
      seededRandom(1, 1),
      0.1,
    )
      .map((s) => s.reason)
      .sort();
    expect(reasons).toEqual([
      'speed: weight 1 (median 12.3 s over 3 rounds; 2 eligible)',
      'speed: weight 1 (no history: explore; 2 eligible)',
    ]);
  });

  it('median', () => {
    expect(median([])).toBeUndefined();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });
});
