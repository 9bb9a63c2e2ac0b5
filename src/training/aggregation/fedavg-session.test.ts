import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PieceDigest } from '../safetensors/digest.js';
import type { AggregatableDtype } from '../safetensors/dtypes.js';
import { writeSafetensorsFile, type TensorData } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { readHeaderFile, readTensorsF32 } from '../safetensors/read.js';
import { createAccumulator } from './fedavg.js';
import { createFedAvgSession, type FedAvgSession } from './fedavg-session.js';
import type { SumPrecision } from './simd/kernels.js';

// The parallel session against the single-threaded reference (fedavg.ts): same sums bit for
// bit, whatever the number of threads, the read size or the order of tensors in a file.

let dir: string;
let header: SafetensorsHeader;
const paths: string[] = [];
const weights = [3, 1, 250, 7, 0.5];
// Sizes that are not multiples of 4, 8 or 16: tensor ends, slice ends and read ends all fall
// mid-vector, so every kernel's scalar tail and every boundary is exercised.
const SHAPES: [string, AggregatableDtype, number][] = [
  ['emb', 'BF16', 1001],
  ['w', 'F32', 2049],
  ['bias', 'F32', 3],
  ['h', 'F16', 777],
];

function values(n: number, k: number, t: number): Float32Array {
  // Wide magnitudes (F16 subnormals included), both signs.
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k * 1.3 + t) * 10 ** ((i % 9) - 6));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fedavg-session-'));
  for (let k = 0; k < weights.length; k++) {
    const tensors: TensorData[] = SHAPES.map(([name, dtype, n], t) => ({
      name,
      dtype,
      shape: [n],
      data: values(n, k, t),
    }));
    // Update 2 lists its tensors in another order, as another library may write them.
    if (k === 2) tensors.reverse();
    const path = join(dir, `u${k}.st`);
    await writeSafetensorsFile(path, tensors);
    paths.push(path);
  }
  const h = await readHeaderFile(paths[0]!);
  if (!h.ok) throw new Error(h.message);
  header = h.header;
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

/** The model digest of a file (digest.ts), which the finish reports. */
const modelDigest = async (p: string) => new PieceDigest().update(await readFile(p)).digest();

async function reference(precision: SumPrecision, out: string) {
  const made = createAccumulator(header, { precision });
  if (!made.ok) throw new Error(made.message);
  for (const [i, p] of paths.entries()) expect((await made.accumulator.add(p, weights[i]!)).ok).toBe(true);
  const fin = await made.accumulator.finish(out);
  if (!fin.ok) throw new Error(fin.message);
  return { sum: Array.from(made.accumulator.sum), digest: fin.digest };
}

async function withSession<T>(
  options: Parameters<typeof createFedAvgSession>[1],
  fn: (s: FedAvgSession) => Promise<T>,
): Promise<T> {
  const made = createFedAvgSession(header, options);
  if (!made.ok) throw new Error(made.message);
  try {
    return await fn(made.session);
  } finally {
    await made.session.close();
  }
}

describe('parallel FedAvg session', () => {
  for (const precision of ['float32', 'float64'] as const) {
    it(`gives the reference's ${precision} sum and output bit for bit with 1 to 3 threads`, async () => {
      const ref = await reference(precision, join(dir, `ref-${precision}.st`));
      for (const [threads, chunkElements] of [
        [1, undefined],
        [2, 37],
        [3, 500],
      ] as const) {
        await withSession(
          { precision, threads, ...(chunkElements === undefined ? {} : { chunkElements }) },
          async (s) => {
            expect(s.threads).toBe(threads);
            for (const [i, p] of paths.entries()) {
              // Verified and unverified adds take different paths; both must add the same.
              expect(await s.add(p, weights[i]!, { verified: i % 2 === 0 })).toMatchObject({ ok: true });
            }
            expect(Array.from(s.sum).every((v, i) => Object.is(v, ref.sum[i]))).toBe(true);
            const out = join(dir, `par-${precision}-${threads}.st`);
            const fin = await s.finish(out);
            expect(fin).toMatchObject({ ok: true, count: paths.length, digest: ref.digest });
            expect(await modelDigest(out)).toBe(ref.digest);
          },
        );
      }
    });
  }

  it('refuses an update with a NaN in a later thread slice and leaves the sum untouched', async () => {
    const bad = join(dir, 'nan.st');
    const h = values(777, 9, 3);
    h[700] = NaN;
    await writeSafetensorsFile(
      bad,
      SHAPES.map(([name, dtype, n], t) => ({
        name,
        dtype,
        shape: [n],
        data: name === 'h' ? h : values(n, 9, t),
      })),
    );
    const made = createAccumulator(header);
    if (!made.ok) throw new Error(made.message);
    const expected = await made.accumulator.add(bad, 1);
    await withSession({ threads: 3, chunkElements: 64 }, async (s) => {
      await s.add(paths[0]!, 2);
      const before = Array.from(s.sum);
      const r = await s.add(bad, 1);
      expect(r).toMatchObject({ ok: false, code: 'non_finite', tensor: 'h' });
      // The same message as one thread scanning the whole file gives.
      expect(r.ok ? '' : r.message).toBe(expected.ok ? '' : expected.message);
      expect(Array.from(s.sum)).toEqual(before);
      expect(s.count).toBe(1);
    });
  });

  it('sums BF16 and F16 updates in float32 within the documented bound (docs/training.md)', async () => {
    // Bound: |sum / W - exact mean| <= (N + 1) x 2^-24 x sum(|w x|) / W per element (N float32
    // rounded adds, decoding exact); the output's own rounding to BF16/F16 comes on top.
    const n = 40;
    const len = 4096;
    const ws = Array.from({ length: n }, (_, k) => k + 1);
    const files: string[] = [];
    const decoded: Float32Array[][] = [];
    for (let k = 0; k < n; k++) {
      const tensors: TensorData[] = (['BF16', 'F16'] as const).map((dtype, t) => ({
        name: `t${t}`,
        dtype,
        shape: [len],
        data: Float32Array.from({ length: len }, (_, i) => Math.cos(i * 1.7 + k * 0.9 + t) * (1 + (i % 5))),
      }));
      const path = join(dir, `half-${k}.st`);
      await writeSafetensorsFile(path, tensors);
      files.push(path);
      // What the file holds: the values rounded to each dtype (read back through the reference).
      const back = await readTensorsF32(path);
      if (!back.ok) throw new Error(back.message);
      decoded.push([back.tensors.get('t0')!.data, back.tensors.get('t1')!.data]);
    }
    const h = await readHeaderFile(files[0]!);
    if (!h.ok) throw new Error(h.message);
    const made = createFedAvgSession(h.header, { precision: 'float32', threads: 2, chunkElements: 1000 });
    if (!made.ok) throw new Error(made.message);
    const s = made.session;
    try {
      for (const [k, p] of files.entries())
        expect((await s.add(p, ws[k]!, { verified: true })).ok).toBe(true);
      const W = ws.reduce((a, b) => a + b, 0);
      let worst = 0;
      for (let t = 0; t < 2; t++) {
        for (let i = 0; i < len; i++) {
          let exact = 0;
          let magnitude = 0;
          for (let k = 0; k < n; k++) {
            exact += ws[k]! * decoded[k]![t]![i]!;
            magnitude += Math.abs(ws[k]! * decoded[k]![t]![i]!);
          }
          const err = Math.abs(s.sum[t * len + i]! / W - exact / W);
          const bound = ((n + 1) * 2 ** -24 * magnitude) / W;
          expect(err).toBeLessThanOrEqual(bound);
          worst = Math.max(worst, err / bound);
        }
      }
      // The float32 sum does round (the bound is not vacuous), and far inside the bound.
      expect(worst).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
  });

  it('refuses a mismatched update or a bad weight as values, and stays usable', async () => {
    const other = join(dir, 'other.st');
    await writeSafetensorsFile(other, [{ name: 'w', dtype: 'F32', shape: [4], data: new Float32Array(4) }]);
    await withSession({ threads: 2 }, async (s) => {
      expect(await s.add(other, 1, { verified: true })).toMatchObject({ ok: false, code: 'incompatible' });
      expect(await s.add(paths[0]!, 0)).toMatchObject({ ok: false, code: 'invalid_weight' });
      expect(await s.add(paths[0]!, 1)).toMatchObject({ ok: true, count: 1 });
      expect((await s.finish(join(dir, 'one.st'))).ok).toBe(true);
    });
  });

  it('rejects every call once closed', async () => {
    await withSession({ threads: 2 }, async (s) => {
      await s.ready();
      await s.close();
      await expect(s.add(paths[0]!, 1)).rejects.toThrow(/closed/);
    });
  });
});
