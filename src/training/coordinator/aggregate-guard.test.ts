import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors } from '../safetensors/encode.js';
import { capWeightShares, checkFiniteModel } from './aggregate-guard.js';

describe('capWeightShares', () => {
  const shares = (w: number[]) => {
    const total = w.reduce((s, x) => s + x, 0);
    return w.map((x) => x / total);
  };

  it('leaves weights alone when no share is above the cap', () => {
    expect(capWeightShares([1, 2, 3], 1)).toEqual([1, 2, 3]);
    expect(capWeightShares([1, 1, 1], 0.5)).toEqual([1, 1, 1]);
    expect(capWeightShares([], 0.1)).toEqual([]);
  });

  it('lowers the largest weights to a common ceiling holding exactly the cap', () => {
    expect(capWeightShares([1e9, 10, 10], 0.5)).toEqual([20, 10, 10]);
    const three = capWeightShares([1e9, 1e9, 10, 30], 0.4);
    const s = shares(three);
    expect(Math.max(...s)).toBeCloseTo(0.4, 12);
    // The small weights keep their ratio.
    expect(three[3]! / three[2]!).toBeCloseTo(3, 12);
    // Lowering one weight may push another over the cap: both end at the ceiling.
    const two = capWeightShares([100, 60, 20, 20], 0.35);
    expect(two[0]).toBeCloseTo(two[1]!, 9);
    for (const x of shares(two)) expect(x).toBeLessThanOrEqual(0.35 + 1e-12);
  });

  it('falls back to equal weights when the cap cannot be met', () => {
    expect(capWeightShares([5, 1], 0.3)).toEqual([1, 1]);
    expect(capWeightShares([7, 2, 1], 1 / 3)).toEqual([1, 1, 1]);
  });
});

describe('checkFiniteModel', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ai-farm-guard-'));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  const file = async (name: string, data: number[], dtype: 'F32' | 'F16' = 'F32') => {
    const path = join(dir, name);
    await writeFile(
      path,
      encodeSafetensors([{ name: 'w', dtype, shape: [data.length], data: Float32Array.from(data) }]),
    );
    return path;
  };

  it('passes a finite model and names the first non-finite value of another', async () => {
    expect(await checkFiniteModel(await file('ok', [1, -3e38, 0]))).toEqual({ ok: true });
    const inf = await checkFiniteModel(await file('inf', [1, 2, Infinity]));
    expect(inf).toMatchObject({ ok: false });
    expect(!inf.ok && inf.message).toMatch(/not finite: tensor "w" .* element 2/);
    const nan = await checkFiniteModel(await file('nan16', [NaN, 1], 'F16'));
    expect(!nan.ok && nan.message).toMatch(/element 0/);
  });
});
