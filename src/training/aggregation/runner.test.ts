import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSafetensorsFile } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { readHeaderFile, readTensorsF32 } from '../safetensors/read.js';
import { aggregate, createFedAvgSession } from './runner.js';
import { fileDigest } from '../../../test/helpers/digest.js';

let dir: string;
let header: SafetensorsHeader;
const paths: string[] = [];

async function write(file: string, a: number[], b: number[]): Promise<string> {
  const path = join(dir, file);
  await writeSafetensorsFile(path, [
    { name: 'a', dtype: 'BF16', shape: [a.length], data: Float32Array.from(a) },
    { name: 'b', dtype: 'F32', shape: [b.length], data: Float32Array.from(b) },
  ]);
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'runner-'));
  paths.push(await write('u0.st', [1, 2, 3], [4, 5]));
  paths.push(await write('u1.st', [3, 4, 5], [6, 7]));
  paths.push(await write('u2.st', [5, 0, 1], [2, 9]));
  const h = await readHeaderFile(paths[0]!);
  if (!h.ok) throw new Error(h.message);
  header = h.header;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = async (p: string): Promise<string> => fileDigest(await readFile(p));

describe('worker runner', () => {
  it('aggregates in a worker thread and reports the digest', async () => {
    const outPath = join(dir, 'median.st');
    const r = await aggregate({
      strategy: 'median',
      inputs: paths.map((path) => ({ path, weight: 1 })),
      globalHeader: header,
      outPath,
      chunkElements: 2,
    });
    expect(r).toMatchObject({ ok: true, outPath, used: [0, 1, 2], rejected: [] });
    if (!r.ok) return;
    expect(r.digest).toBe(await sha256(outPath));
    expect(r.bytesRead).toBeGreaterThan(0);
    expect(r.ms).toBeGreaterThan(0);
    const t = await readTensorsF32(outPath);
    expect(t.ok && [...t.tensors.values()].map((x) => Array.from(x.data))).toEqual([
      [3, 2, 3],
      [4, 7],
    ]);
  });

  it('returns failures as values from the worker', async () => {
    const r = await aggregate({
      strategy: 'krum',
      params: { f: 1 },
      inputs: paths.map((path) => ({ path, weight: 1 })),
      globalHeader: header,
      outPath: join(dir, 'krum.st'),
    });
    expect(r).toMatchObject({ ok: false, code: 'too_few_inputs' });
  });

  it('rejects when the worker hits an unexpected error', async () => {
    const r = aggregate({
      strategy: 'fedavg',
      inputs: [{ path: join(dir, 'missing.st'), weight: 1 }],
      globalHeader: header,
      outPath: join(dir, 'x.st'),
    });
    await expect(r).rejects.toThrow(/ENOENT/);
  });

  it('runs an incremental FedAvg session in a worker', async () => {
    const made = createFedAvgSession(header, { chunkElements: 2, mu: 0.01 });
    if (!made.ok) throw new Error(made.message);
    const s = made.session;
    try {
      expect(s.mu).toBe(0.01);
      expect(await s.add(paths[0]!, 1)).toMatchObject({ ok: true, count: 1 });
      const nan = await write('nan.st', [1, 1, 1], [NaN, 1]);
      const [r1, r2] = await Promise.all([s.add(paths[1]!, 3), s.add(nan, 1)]);
      expect(r1).toMatchObject({ ok: true });
      expect(r2).toMatchObject({ ok: false, code: 'non_finite', tensor: 'b' });
      expect([s.count, s.totalWeight]).toEqual([2, 4]);
      // The sum is shared with the worker: visible here without copying.
      expect(Array.from(s.sum)).toEqual([10, 14, 18, 22, 26]);
      const outPath = join(dir, 'session.st');
      const fin = await s.finish(outPath, { round: '1' });
      expect(fin).toMatchObject({ ok: true, count: 2, totalWeight: 4, outPath });
      if (!fin.ok) return;
      expect(fin.digest).toBe(await sha256(outPath));
      const t = await readTensorsF32(outPath);
      expect(t.ok && t.header.metadata).toEqual({ round: '1' });
      expect(t.ok && [...t.tensors.values()].map((x) => Array.from(x.data))).toEqual([
        [2.5, 3.5, 4.5],
        [5.5, 6.5],
      ]);
    } finally {
      await s.close();
    }
    await expect(s.add(paths[0]!, 1)).rejects.toThrow(/closed/);
  });
});
