import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSafetensorsFile, type TensorData } from '../safetensors/encode.js';
import { readHeaderFile } from '../safetensors/read.js';
import { flatLayout, type FlatLayout } from './layout.js';
import { runRobust, type RobustSpec } from './robust.js';
import { runRobustParallel } from './robust-parallel.js';

// The parallel robust strategies against the single-threaded reference (robust.ts).

let dir: string;
let layout: FlatLayout;
const paths: string[] = [];
const N = 7;

function tensors(k: number, poison?: { at: number }): TensorData[] {
  const v = (n: number, t: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.91 + k * 2.3 + t) * (k === 5 ? 40 : 1));
  const h = v(301, 2);
  if (poison) h[poison.at] = Infinity;
  return [
    { name: 'w', dtype: 'F32', shape: [13, 17], data: v(221, 0) },
    { name: 'emb', dtype: 'BF16', shape: [97], data: v(97, 1) },
    { name: 'h', dtype: 'F16', shape: [301], data: h },
  ];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'robust-par-'));
  for (let k = 0; k < N; k++) {
    const path = join(dir, `u${k}.st`);
    // One update lists its tensors in another order, as another library may write them.
    await writeSafetensorsFile(path, k === 3 ? tensors(k).reverse() : tensors(k));
    paths.push(path);
  }
  const h = await readHeaderFile(paths[0]!);
  if (!h.ok) throw new Error(h.message);
  const l = flatLayout(h.header);
  if (!l.ok) throw new Error(l.message);
  layout = l.layout;
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

const SPECS: RobustSpec[] = [
  { strategy: 'median' },
  { strategy: 'trimmed_mean', params: { trim: 2 } },
  { strategy: 'krum', params: { f: 1 } },
  { strategy: 'multi_krum', params: { f: 1, m: 3 } },
];

async function both(spec: RobustSpec, files: string[], threads: number, chunkElements: number) {
  const inputs = files.map((path) => ({ path, weight: 1 }));
  const name = `${spec.strategy}-${threads}-${chunkElements}-${Math.random().toString(36).slice(2)}`;
  const ref = await runRobust({ ...spec, chunkElements }, inputs, layout, join(dir, `ref-${name}.st`));
  const par = await runRobustParallel(
    { ...spec, chunkElements },
    inputs,
    layout,
    join(dir, `par-${name}.st`),
    threads,
  );
  return { ref, par };
}

describe('parallel robust aggregation', () => {
  for (const spec of SPECS) {
    it(`${spec.strategy}: the reference's output bit for bit on 2 and 3 threads`, async () => {
      for (const [threads, chunk] of [
        [2, 50],
        [3, 619],
      ] as const) {
        const { ref, par } = await both(spec, paths, threads, chunk);
        if (!ref.ok || !par.ok) throw new Error(`failed: ${JSON.stringify({ ref, par })}`);
        expect(par.digest).toBe(ref.digest);
        expect(par.used).toEqual(ref.used);
        expect(par.rejected).toEqual([]);
        if (ref.scores) {
          // Distances are summed in another order: scores agree to rounding, selections exactly.
          for (const [i, s] of Object.entries(ref.scores)) expect(par.scores![Number(i)]).toBeCloseTo(s, 9);
        }
      }
    });
  }

  it('rejects an update with an Inf found late, and the result is the reference without it', async () => {
    const bad = join(dir, 'inf.st');
    await writeSafetensorsFile(bad, tensors(6, { at: 290 }));
    const broken = join(dir, 'broken.st');
    await writeFile(broken, 'not safetensors');
    const files = [...paths.slice(0, 6), bad, broken];
    for (const spec of SPECS.slice(0, 3)) {
      const { ref, par } = await both(spec, files, 2, 100);
      if (!ref.ok || !par.ok) throw new Error(`failed: ${JSON.stringify({ ref, par })}`);
      expect(par.digest).toBe(ref.digest);
      expect(par.used).toEqual(ref.used);
      expect(par.rejected).toEqual(ref.rejected);
      expect(par.rejected.map((r) => r.code)).toEqual(['non_finite', 'invalid_header']);
    }
  });

  it('reports too few usable updates as the reference does', async () => {
    const { ref, par } = await both({ strategy: 'krum', params: { f: 2 } }, paths.slice(0, 5), 2, 100);
    expect(par).toEqual(ref);
    expect(par).toMatchObject({ ok: false, code: 'too_few_inputs' });
  });
});
