import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSafetensorsFile } from '../safetensors/encode.js';
import { readHeaderFile, readTensorsF32 } from '../safetensors/read.js';
import { prepareTrainingConfig, type TrainingConfig } from '../training-config.js';
import { RoundSum } from './round-sum.js';
import type { AcceptedUpdate } from './run.js';
import { serverMix, stalenessWeight, updateWeight } from './staleness.js';

describe('staleness weighting s(τ)', () => {
  it('constant is 1 whatever the staleness', () => {
    for (const tau of [0, 1, 7, 100])
      expect(stalenessWeight({ staleness: 'constant', a: 0, b: 0 }, tau)).toBe(1);
  });

  it('polynomial is (1 + τ)^-a', () => {
    const s = { staleness: 'polynomial' as const, a: 0.5, b: 0 };
    expect(stalenessWeight(s, 0)).toBe(1);
    expect(stalenessWeight(s, 3)).toBeCloseTo(0.5, 12); // 4^-0.5
    expect(stalenessWeight(s, 8)).toBeCloseTo(1 / 3, 12); // 9^-0.5
    expect(stalenessWeight({ ...s, a: 2 }, 1)).toBeCloseTo(0.25, 12); // 2^-2
  });

  it('hinge is 1 up to b, then 1 / (a (τ - b) + 1)', () => {
    const s = { staleness: 'hinge' as const, a: 10, b: 4 };
    expect(stalenessWeight(s, 0)).toBe(1);
    expect(stalenessWeight(s, 4)).toBe(1);
    expect(stalenessWeight(s, 5)).toBeCloseTo(1 / 11, 12);
    expect(stalenessWeight(s, 6)).toBeCloseTo(1 / 21, 12);
  });

  it('weights an update by its samples times s(τ) in async mode only', () => {
    const made = prepareTrainingConfig(
      { rounds: 3, mode: 'async', buffer_size: 2, staleness: 'polynomial', a: 1 },
      3,
      { defaultEpochs: 1, defaultBatchSize: 1 },
    );
    if (!made.ok) throw made.error;
    // Folded into version 5, started from version 2: τ = 3, s = 1/4.
    expect(updateWeight(made.config, 5, { round: 2, numSamples: 200 })).toBeCloseTo(50, 12);
    expect(updateWeight(made.config, 5, { round: 5, numSamples: 200 })).toBe(200);
    expect(updateWeight({}, 5, { round: 2, numSamples: 200 })).toBe(200);
  });

  it('mixes with the old version only when server_lr < 1 and a version exists', () => {
    expect(serverMix(1, '/old', '/mean')).toBeNull();
    expect(serverMix(0.5, null, '/mean')).toBeNull();
    expect(serverMix(0.25, '/old', '/mean')).toEqual([
      { path: '/old', weight: 0.75 },
      { path: '/mean', weight: 0.25 },
    ]);
  });
});

describe('the async fold', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'async-fold-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('sums each update with weight num_samples x s(τ): the hand-computed mean', async () => {
    const made = prepareTrainingConfig(
      { rounds: 9, mode: 'async', buffer_size: 3, staleness: 'hinge', a: 1, b: 1 },
      3,
      { defaultEpochs: 1, defaultBatchSize: 1 },
    );
    if (!made.ok) throw made.error;
    const config: TrainingConfig = made.config;
    // Version 4's buffer: updates that started from versions 4, 2 and 1 (τ = 0, 2, 3).
    const ups = [
      { round: 4, x: 1, n: 100 },
      { round: 2, x: 5, n: 100 },
      { round: 1, x: 9, n: 300 },
    ];
    const accepted: AcceptedUpdate[] = [];
    for (const [i, u] of ups.entries()) {
      const path = join(dir, `u${i}.safetensors`);
      await writeSafetensorsFile(path, [
        { name: 'w', dtype: 'F32', shape: [2], data: Float32Array.of(u.x, -u.x) },
      ]);
      accepted.push({
        round: u.round,
        rank: i,
        attempt: 1,
        clientId: `c${i}`,
        numSamples: u.n,
        path,
        digest: '',
        bytes: 0,
        metrics: null,
      });
    }
    const h = await readHeaderFile(accepted[0]!.path);
    if (!h.ok) throw new Error(h.message);
    const sum = new RoundSum(config, (err) => {
      throw err;
    });
    for (const u of accepted) sum.add(u, updateWeight(config, 4, u), h.header);
    const out = join(dir, 'mean.safetensors');
    const fin = await sum.finish(3, out, {});
    await sum.close();
    expect(fin.ok).toBe(true);
    // Hinge a=1, b=1: s(0) = 1, s(2) = 1/(1*(2-1)+1) = 1/2, s(3) = 1/(2+1) = 1/3.
    // Weights 100, 50, 100; mean = (1*100 + 5*50 + 9*100) / 250 = 1250 / 250 = 5.
    const t = await readTensorsF32(out);
    if (!t.ok) throw new Error(t.message);
    expect(t.tensors.get('w')?.data[0]).toBeCloseTo(5, 5);
    expect(t.tensors.get('w')?.data[1]).toBeCloseTo(-5, 5);
  });
});
