import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dtype } from '../safetensors/dtypes.js';
import { writeSafetensorsFile } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { readHeaderFile, readTensorsF32 } from '../safetensors/read.js';
import { runAggregation } from './aggregate-job.js';
import type { AggregateJob, StrategySpec } from './types.js';

let dir: string;
let header: SafetensorsHeader;
const paths: string[] = [];

/** Each update: tensor `a` (3 values, F32) and `b` (2 values, F16), i.e. 5 floats. */
const UPDATES = [
  [1, 2, 3, 4, 5],
  [2, 2, 2, 2, 2],
  [10, -1, 3, 0, 100],
  [0, 0, 0, 0, 0],
  [4, 4, 4, 4, 4],
];

async function write(file: string, v: number[], dtypeB: Dtype = 'F16'): Promise<string> {
  const path = join(dir, file);
  await writeSafetensorsFile(path, [
    { name: 'a', dtype: 'F32', shape: [3], data: Float32Array.from(v.slice(0, 3)) },
    { name: 'b', dtype: dtypeB, shape: [2], data: Float32Array.from(v.slice(3)) },
  ]);
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'robust-'));
  for (const [i, v] of UPDATES.entries()) paths.push(await write(`u${i}.st`, v));
  const h = await readHeaderFile(paths[0]!);
  if (!h.ok) throw new Error(h.message);
  header = h.header;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(
  spec: StrategySpec,
  inputs: string[],
  chunkElements = 2,
): Promise<{ flat: number[]; r: unknown }> {
  const outPath = join(dir, `out-${Math.random().toString(36).slice(2)}.st`);
  const job = {
    ...spec,
    inputs: inputs.map((path) => ({ path, weight: 1 })),
    globalHeader: header,
    outPath,
    chunkElements,
  };
  const r = await runAggregation(job as AggregateJob);
  if (!r.ok) return { flat: [], r };
  const t = await readTensorsF32(outPath);
  if (!t.ok) throw new Error(t.message);
  return { flat: [...t.tensors.get('a')!.data, ...t.tensors.get('b')!.data], r };
}

describe('robust strategies over files', () => {
  it.each([1, 2, 3, 64])('median of three with chunk %i', async (chunk) => {
    const { flat } = await run({ strategy: 'median' }, paths.slice(0, 3), chunk);
    expect(flat).toEqual([2, 2, 3, 2, 5]);
  });

  it('trimmed mean by beta and by count', async () => {
    // Sorted columns: [0,1,2,4,10] [-1,0,2,2,4] [0,2,3,3,4] [0,0,2,4,4] [0,2,4,5,100]; b is stored as F16.
    const expected = [Math.fround(7 / 3), Math.fround(4 / 3), Math.fround(8 / 3), 2, 3.666015625];
    expect((await run({ strategy: 'trimmed_mean', params: { beta: 0.2 } }, paths)).flat).toEqual(expected);
    expect((await run({ strategy: 'trimmed_mean', params: { trim: 1 } }, paths, 3)).flat).toEqual(expected);
    const r = await run({ strategy: 'trimmed_mean', params: { trim: 2 } }, paths.slice(0, 3));
    expect(r.r).toMatchObject({ ok: false, code: 'too_few_inputs' });
  });

  it('Krum picks the most central update; multi-Krum averages the m best', async () => {
    // Updates with every coordinate equal to 0, 1, 2, 3 and 100 (see math.test.ts for the scores).
    const flatPaths = await Promise.all([0, 1, 2, 3, 100].map((v) => write(`k${v}.st`, [v, v, v, v, v])));
    const krum = await run({ strategy: 'krum', params: { f: 1 } }, flatPaths);
    expect(krum.flat).toEqual([1, 1, 1, 1, 1]);
    expect(krum.r).toMatchObject({ ok: true, used: [1], scores: { 0: 25, 1: 10, 2: 10, 3: 25, 4: 95065 } });
    const multi = await run({ strategy: 'multi_krum', params: { f: 1, m: 3 } }, flatPaths, 4);
    expect(multi.flat).toEqual([1, 1, 1, 1, 1]);
    expect(multi.r).toMatchObject({ used: [0, 1, 2] });
    const two = await run({ strategy: 'multi_krum', params: { f: 1, m: 2 } }, flatPaths, 1);
    expect(two.flat).toEqual([1.5, 1.5, 1.5, 1.5, 1.5]);
    const few = await run({ strategy: 'krum', params: { f: 1 } }, flatPaths.slice(0, 4));
    expect(few.r).toMatchObject({ ok: false, code: 'too_few_inputs' });
  });

  it('leaves out non-finite and mismatched updates', async () => {
    const nan = await write('nan.st', [1, NaN, 1, 1, 1]);
    const inf = await write('inf.st', [1, 1, 1, 1, Infinity]);
    const wrong = await write('wrong.st', [1, 1, 1, 1, 1], 'F32');
    const med = await run({ strategy: 'median' }, [nan, ...paths.slice(0, 3), inf, wrong]);
    expect(med.flat).toEqual([2, 2, 3, 2, 5]);
    expect((med.r as { rejected: object[] }).rejected.every((x) => !('ok' in x))).toBe(true);
    expect(med.r).toMatchObject({
      used: [1, 2, 3],
      rejected: [
        { index: 0, code: 'non_finite', tensor: 'a' },
        { index: 4, code: 'non_finite', tensor: 'b' },
        { index: 5, code: 'incompatible', tensor: 'b' },
      ],
    });
    const flatPaths = await Promise.all([0, 1, 2, 3, 100].map((v) => write(`kk${v}.st`, [v, v, v, v, v])));
    const krum = await run({ strategy: 'krum', params: { f: 1 } }, [...flatPaths, inf], 2);
    expect(krum.flat).toEqual([1, 1, 1, 1, 1]);
    expect(krum.r).toMatchObject({ rejected: [{ index: 5, code: 'non_finite', tensor: 'b' }] });
  });

  it('runs FedAvg through the same job interface', async () => {
    const { flat, r } = await run({ strategy: 'fedprox', params: { mu: 0.1 } }, paths.slice(0, 2));
    expect(flat).toEqual([1.5, 2, 2.5, 3, 3.5]);
    expect(r).toMatchObject({ ok: true, used: [0, 1], rejected: [] });
  });

  it('reports invalid parameters', async () => {
    const bad = [
      { strategy: 'krum', params: { f: -1 } },
      { strategy: 'multi_krum', params: { f: 1, m: 0 } },
      { strategy: 'trimmed_mean', params: { beta: 0.5 } },
      { strategy: 'fedprox', params: { mu: -1 } },
      { strategy: 'nope' },
    ];
    for (const spec of bad) {
      expect((await run(spec as StrategySpec, paths)).r).toMatchObject({ ok: false, code: 'invalid_params' });
    }
    expect((await run({ strategy: 'median' }, [])).r).toMatchObject({ ok: false, code: 'no_inputs' });
  });
});
