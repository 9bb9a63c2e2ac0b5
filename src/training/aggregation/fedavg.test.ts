import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dtype } from '../safetensors/dtypes.js';
import { createSafetensorsWriter, writeSafetensorsFile } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { readHeaderFile, readTensorsF32 } from '../safetensors/read.js';
import { createAccumulator, type FedAvgAccumulator } from './fedavg.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fedavg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Spec = [name: string, dtype: Dtype, values: number[]];

/** Writes a model with tensors `a` ([3]) and `b` ([2]) or any given list; returns path and header. */
async function model(file: string, specs: Spec[]): Promise<{ path: string; header: SafetensorsHeader }> {
  const path = join(dir, file);
  await writeSafetensorsFile(
    path,
    specs.map(([name, dtype, values]) => ({
      name,
      dtype,
      shape: [values.length],
      data: Float32Array.from(values),
    })),
  );
  const h = await readHeaderFile(path);
  if (!h.ok) throw new Error(h.message);
  return { path, header: h.header };
}

function accumulator(header: SafetensorsHeader, chunkElements?: number): FedAvgAccumulator {
  const made = createAccumulator(header, chunkElements === undefined ? {} : { chunkElements });
  if (!made.ok) throw new Error(made.message);
  return made.accumulator;
}

async function values(path: string): Promise<Record<string, number[]>> {
  const r = await readTensorsF32(path);
  if (!r.ok) throw new Error(r.message);
  return Object.fromEntries([...r.tensors].map(([k, v]) => [k, Array.from(v.data)]));
}

describe('FedAvg accumulator', () => {
  it('computes the weighted mean with chunks that split tensors', async () => {
    const u1 = await model('u1.st', [
      ['a', 'F32', [1, 2, 3]],
      ['b', 'F32', [10, 20]],
    ]);
    const u2 = await model('u2.st', [
      ['a', 'F32', [4, 5, 6]],
      ['b', 'F32', [-10, 0]],
    ]);
    const u3 = await model('u3.st', [
      ['a', 'F32', [0, 0, 0]],
      ['b', 'F32', [1, 1]],
    ]);
    for (const chunk of [1, 2, 4, 1 << 20]) {
      const acc = accumulator(u1.header, chunk);
      expect(await acc.add(u1.path, 1)).toMatchObject({ ok: true, count: 1, totalWeight: 1 });
      await acc.add(u2.path, 2);
      expect(await acc.add(u3.path, 3)).toMatchObject({ ok: true, count: 3, totalWeight: 6 });
      const out = join(dir, `mean-${chunk}.st`);
      const fin = await acc.finish(out);
      expect(fin).toMatchObject({ ok: true, count: 3, totalWeight: 6, outPath: out });
      // a: (1*[1,2,3] + 2*[4,5,6]) / 6; b: (1*[10,20] + 2*[-10,0] + 3*[1,1]) / 6
      expect(await values(out)).toEqual({
        a: [9 / 6, 12 / 6, 15 / 6].map(Math.fround),
        b: [-7 / 6, 23 / 6].map(Math.fround),
      });
    }
  });

  it('reads updates whose tensors are laid out in another order', async () => {
    const g = await model('g.st', [
      ['a', 'F32', [1, 2, 3]],
      ['b', 'F32', [10, 20]],
    ]);
    const swapped = await model('swapped.st', [
      ['b', 'F32', [30, 40]],
      ['a', 'F32', [3, 4, 5]],
    ]);
    const acc = accumulator(g.header, 2);
    await acc.add(g.path, 1);
    await acc.add(swapped.path, 1);
    const out = join(dir, 'swapped-mean.st');
    await acc.finish(out);
    expect(await values(out)).toEqual({ a: [2, 3, 4], b: [20, 30] });
  });

  it.each(['F16', 'BF16'] as const)('aggregates %s updates and writes the same dtype', async (dtype) => {
    const u1 = await model(`h1-${dtype}.st`, [
      ['w', dtype, [1, -2, 0.5, 3]],
      ['v', 'F32', [1]],
    ]);
    const u2 = await model(`h2-${dtype}.st`, [
      ['w', dtype, [3, 2, 1.5, -1]],
      ['v', 'F32', [2]],
    ]);
    const acc = accumulator(u1.header, 3);
    await acc.add(u1.path, 1);
    await acc.add(u2.path, 1);
    const out = join(dir, `h-mean-${dtype}.st`);
    await acc.finish(out);
    const h = await readHeaderFile(out);
    expect(h.ok && h.header.tensors.map((t) => t.dtype)).toEqual([dtype, 'F32']);
    expect(await values(out)).toEqual({ w: [2, 0, 1, 1], v: [1.5] });
  });

  it('rejects a non-finite update and leaves the sum untouched', async () => {
    const good = await model('good.st', [
      ['a', 'F32', [1, 2, 3]],
      ['b', 'F32', [4, 5]],
    ]);
    const bad = await model('bad.st', [
      ['a', 'F32', [1, 2, 3]],
      ['b', 'F32', [4, Infinity]],
    ]);
    const badHalf = await model('bad16.st', [
      ['a', 'F32', [1, 2, 3]],
      ['b', 'F32', [NaN, 0]],
    ]);
    const acc = accumulator(good.header, 2);
    await acc.add(good.path, 2);
    const before = Float64Array.from(acc.sum);
    expect(await acc.add(bad.path, 5)).toMatchObject({ ok: false, code: 'non_finite', tensor: 'b' });
    expect(await acc.add(badHalf.path, 5)).toMatchObject({ ok: false, code: 'non_finite', tensor: 'b' });
    expect(acc.sum).toEqual(before);
    expect([acc.count, acc.totalWeight]).toEqual([1, 2]);
    const out = join(dir, 'after-bad.st');
    await acc.finish(out);
    expect(await values(out)).toEqual({ a: [1, 2, 3], b: [4, 5] });
  });

  it('rejects mismatched updates and bad weights', async () => {
    const g = await model('m-g.st', [['a', 'F32', [1, 2, 3]]]);
    const other = await model('m-o.st', [['a', 'F32', [1, 2]]]);
    const acc = accumulator(g.header);
    expect(await acc.add(other.path, 1)).toMatchObject({ ok: false, code: 'incompatible', tensor: 'a' });
    expect(await acc.add(g.path, 0)).toMatchObject({ ok: false, code: 'invalid_weight' });
    expect(await acc.add(g.path, NaN)).toMatchObject({ ok: false, code: 'invalid_weight' });
    expect(await acc.finish(join(dir, 'none.st'))).toMatchObject({ ok: false, code: 'no_updates' });
  });

  it('refuses a global model with a non-float tensor', async () => {
    const path = join(dir, 'int.st');
    await writeSafetensorsFile(path, [{ name: 'steps', dtype: 'I64', shape: [1], data: new Uint8Array(8) }]);
    const h = await readHeaderFile(path);
    if (!h.ok) throw new Error(h.message);
    expect(createAccumulator(h.header)).toMatchObject({
      ok: false,
      code: 'unsupported_dtype',
      tensor: 'steps',
    });
  });

  it('exposes FedProx mu and aggregates like FedAvg', async () => {
    const g = await model('p.st', [['a', 'F32', [2, 4]]]);
    const made = createAccumulator(g.header, { mu: 0.01 });
    expect(made.ok && made.accumulator.mu).toBe(0.01);
  });

  it('keeps memory at about one model whatever the number of updates', async () => {
    const elements = 1 << 20; // 4 MB of float32
    const modelBytes = elements * 4;
    const paths: string[] = [];
    const data = new Float32Array(1 << 16);
    for (let u = 0; u < 20; u++) {
      const path = join(dir, `big-${u}.st`);
      const w = await createSafetensorsWriter(path, [{ name: 'w', dtype: 'F32', shape: [elements] }]);
      for (let off = 0; off < elements; off += data.length) {
        data.fill(u + off / elements);
        await w.write(new Uint8Array(data.buffer));
      }
      await w.close();
      paths.push(path);
    }
    const h = await readHeaderFile(paths[0]!);
    if (!h.ok) throw new Error(h.message);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const base = process.memoryUsage().arrayBuffers;
    const acc = accumulator(h.header);
    let peak = 0;
    for (const p of paths) {
      expect((await acc.add(p, 1)).ok).toBe(true);
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    }
    const fin = await acc.finish(join(dir, 'big-mean.st'));
    expect(fin.ok).toBe(true);
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    // float64 sum (2 model sizes) + 1 MiB buffers (read, float32 chunk, output encoding).
    expect(peak).toBeLessThan(3 * modelBytes);
    expect(peak).toBeGreaterThan(2 * modelBytes); // the measure sees the sum, so it is measuring something
    const mean = await readTensorsF32(join(dir, 'big-mean.st'));
    expect(mean.ok && mean.tensors.get('w')!.data[0]).toBeCloseTo(9.5, 5);
  });
});
