import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSafetensorsWriter,
  encodeSafetensors,
  writeSafetensorsFile,
  type TensorData,
} from './encode.js';
import { numberToBf16Bits, numberToF16Bits } from './half.js';
import { readHeaderFile, readTensorsF32, scanFinite } from './read.js';
import { fileDigest } from '../../../test/helpers/digest.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'st-read-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Mixed dtypes with odd sizes so later float tensors start unaligned and chunks split elements. */
function mixed(bad?: string): TensorData[] {
  const f32 = Float32Array.from({ length: 37 }, (_, i) => i * 0.5 - 3);
  const f16 = Uint16Array.from({ length: 11 }, (_, i) => numberToF16Bits(i - 5));
  const bf16 = Uint16Array.from({ length: 9 }, (_, i) => numberToBf16Bits(i * 2));
  if (bad === 'f32') f32[30] = NaN;
  if (bad === 'f16') f16[7] = 0x7c00;
  if (bad === 'bf16') bf16[8] = 0xff80;
  return [
    { name: 'bytes', dtype: 'U8', shape: [3], data: Uint8Array.of(1, 2, 3) },
    { name: 'half', dtype: 'F16', shape: [11], data: f16 },
    { name: 'w', dtype: 'F32', shape: [37], data: f32 },
    { name: 'brain', dtype: 'BF16', shape: [3, 3], data: bf16 },
  ];
}

describe('readTensorsF32', () => {
  it('decodes a file and a Buffer the same way', async () => {
    const buf = encodeSafetensors(mixed());
    const path = join(dir, 'mixed.safetensors');
    await writeFile(path, buf);
    const fromBuf = await readTensorsF32(buf);
    const fromFile = await readTensorsF32(path);
    expect(fromBuf.ok && fromFile.ok).toBe(true);
    if (!fromBuf.ok || !fromFile.ok) return;
    expect([...fromFile.tensors.keys()]).toEqual(['bytes', 'half', 'w', 'brain']);
    expect(Array.from(fromFile.tensors.get('half')!.data)).toEqual([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5]);
    expect(fromFile.tensors.get('w')!.data[5]).toBe(-0.5);
    expect(fromFile.tensors.get('brain')!.shape).toEqual([3, 3]);
    expect(Array.from(fromFile.tensors.get('brain')!.data)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16]);
    for (const [k, v] of fromBuf.tensors) expect(fromFile.tensors.get(k)!.data).toEqual(v.data);
  });

  it('reports an invalid file as a value', async () => {
    expect(await readTensorsF32(Buffer.from('nonsense'))).toMatchObject({ ok: false });
    const ints = encodeSafetensors([
      { name: 'i', dtype: 'I32', shape: [2], data: new Uint8Array(Int32Array.of(-7, 9).buffer) },
      { name: 'l', dtype: 'I64', shape: [1], data: new Uint8Array(BigInt64Array.of(-3n).buffer) },
      { name: 'e4', dtype: 'F8_E4M3', shape: [3], data: Uint8Array.of(0x38, 0xc4, 0x7f) },
      { name: 'e5', dtype: 'F8_E5M2', shape: [2], data: Uint8Array.of(0x3c, 0x7c) },
    ]);
    const r = await readTensorsF32(ints);
    expect(r.ok && [...r.tensors.values()].map((t) => Array.from(t.data))).toEqual([
      [-7, 9],
      [-3],
      [1, -3, NaN],
      [1, Infinity],
    ]);
  });
});

describe('scanFinite', () => {
  it.each([
    [undefined, undefined],
    ['f32', 'w'],
    ['f16', 'half'],
    ['bf16', 'brain'],
  ])('with bad=%s reports %s, across chunk sizes', async (bad, tensor) => {
    const path = join(dir, `scan-${bad}.safetensors`);
    await writeFile(path, encodeSafetensors(mixed(bad)));
    const h = await readHeaderFile(path);
    if (!h.ok) throw new Error(h.message);
    for (const chunk of [8, 13, 64, 1 << 20]) {
      const r = await scanFinite(path, h.header, chunk);
      if (tensor === undefined) expect(r).toEqual({ ok: true, bytesRead: h.header.bufferBytes });
      else expect(r).toMatchObject({ ok: false, code: 'non_finite', tensor });
    }
  });
});

describe('streaming writer', () => {
  it('writes atomically with the digest of the file', async () => {
    const path = join(dir, 'stream.safetensors');
    const tensors = mixed();
    const w = await createSafetensorsWriter(path, tensors, { round: '3' });
    const whole = encodeSafetensors(tensors, { round: '3' });
    const body = whole.subarray(w.header.dataStart);
    for (let i = 0; i < body.length; i += 7) await w.write(body.subarray(i, i + 7));
    await expect(readFile(path)).rejects.toThrow(); // nothing published before close
    const done = await w.close();
    const bytes = await readFile(path);
    expect(bytes.equals(whole)).toBe(true);
    expect(done.digest).toBe(fileDigest(bytes));
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses a wrong length and leaves no temp file', async () => {
    const path = join(dir, 'short.safetensors');
    const w = await createSafetensorsWriter(path, mixed());
    await w.write(new Uint8Array(5));
    await expect(w.close()).rejects.toThrow(/body bytes/);
    await expect(w.write(new Uint8Array(1))).rejects.toThrow();
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp') || f === 'short.safetensors')).toEqual([]);
  });

  it('writes tensors one by one', async () => {
    const path = join(dir, 'whole.safetensors');
    const r = await writeSafetensorsFile(path, [
      { name: 'x', dtype: 'F16', shape: [2], data: Float32Array.of(1.5, -2) },
    ]);
    const back = await readTensorsF32(path);
    expect(back.ok && Array.from(back.tensors.get('x')!.data)).toEqual([1.5, -2]);
    expect(r.bytes).toBe((await readFile(path)).length);
  });
});
