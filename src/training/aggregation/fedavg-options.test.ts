import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors } from '../safetensors/encode.js';
import { parseHeader } from '../safetensors/header.js';
import { readTensorsF32 } from '../safetensors/read.js';
import { createAccumulator } from './fedavg.js';
import { createFedAvgSession } from './runner.js';

// The options the round coordinator uses: a float32 sum (one model of memory) and adds that
// skip the NaN/Inf pass for files already scanned on upload.

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fedavg-opt-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function file(name: string, values: number[]): Promise<string> {
  const path = join(dir, name);
  await writeFile(
    path,
    encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [values.length], data: Float32Array.from(values) }]),
  );
  return path;
}
const header = (n: number) => {
  const buf = encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [n], data: new Float32Array(n) }]);
  const h = parseHeader(buf, buf.length);
  if (!h.ok) throw new Error(h.message);
  return h.header;
};

describe('FedAvg options', () => {
  it('a float32 sum gives the weighted mean and takes one model of memory', async () => {
    const made = createAccumulator(header(3), { precision: 'float32' });
    if (!made.ok) throw new Error(made.message);
    const acc = made.accumulator;
    expect(acc.sum).toBeInstanceOf(Float32Array);
    expect(acc.sum.buffer.byteLength).toBe(12);
    expect((await acc.add(await file('a', [1, 2, 3]), 1)).ok).toBe(true);
    expect((await acc.add(await file('b', [3, 4, 5]), 3)).ok).toBe(true);
    const out = join(dir, 'mean');
    expect((await acc.finish(out)).ok).toBe(true);
    const r = await readTensorsF32(out);
    expect(r.ok && Array.from(r.tensors.get('w')!.data)).toEqual([2.5, 3.5, 4.5]);
  });

  it('verified adds skip the NaN/Inf pass; unverified ones still refuse NaN', async () => {
    const bad = await file('nan', [1, NaN, 3]);
    const made = createFedAvgSession(header(3), { precision: 'float32' });
    if (!made.ok) throw new Error(made.message);
    const s = made.session;
    try {
      const refused = await s.add(bad, 1);
      expect(refused).toMatchObject({ ok: false, code: 'non_finite' });
      const ok = await s.add(await file('ok', [1, 1, 1]), 1, { verified: true });
      // One pass over the 12 body bytes instead of two.
      expect(ok).toMatchObject({ ok: true, count: 1, bytesRead: 12 });
      expect(Array.from(s.sum)).toEqual([1, 1, 1]);
    } finally {
      await s.close();
    }
  });
});
