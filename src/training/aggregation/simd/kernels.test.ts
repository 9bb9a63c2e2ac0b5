import { describe, expect, it } from 'vitest';
import type { AggregatableDtype } from '../../safetensors/dtypes.js';
import { f32ToBf16 } from '../../safetensors/half.js';
import { decodeToF32 } from '../../safetensors/read.js';
import { weightedAccumulate } from '../math.js';
import { createKernels, fedAvgModule, type SumPrecision } from './kernels.js';

const DTYPES: AggregatableDtype[] = ['F32', 'F16', 'BF16'];
const expMask = (d: AggregatableDtype) => (d === 'F32' ? 0x7f800000 : d === 'F16' ? 0x7c00 : 0x7f80);

/** Random finite bit patterns of `dtype`, with zeros, signed zeros and subnormals among them. */
function randomBits(dtype: AggregatableDtype, n: number, seed: number): Uint8Array {
  let s = seed;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 ** 32;
  const mask = expMask(dtype);
  if (dtype === 'F32') {
    const u = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      u[i] = rand() >>> 0;
      if ((u[i]! & mask) === mask) u[i] = u[i]! & ~0x40000000;
    }
    u.set([0, 0x80000000, 1, 0x807fffff].slice(0, n));
    return new Uint8Array(u.buffer);
  }
  const u = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    u[i] = rand() & 0xffff;
    if ((u[i]! & mask) === mask) u[i] = u[i]! & ~0x4000;
  }
  u.set([0, 0x8000, 1, 0x83ff, 0x03ff].slice(0, n));
  return new Uint8Array(u.buffer);
}

/** Writes NaN, +Inf and -Inf of `dtype` at the given elements. */
function putNonFinite(dtype: AggregatableDtype, bits: Uint8Array, at: [number, number, number]): void {
  const inf = expMask(dtype);
  const values =
    dtype === 'F32' ? [inf | 0x123, inf, (inf | 0x80000000) >>> 0] : [inf | 0x3, inf, inf | 0x8000];
  const view =
    dtype === 'F32'
      ? new Uint32Array(bits.buffer, bits.byteOffset, bits.byteLength / 4)
      : new Uint16Array(bits.buffer, bits.byteOffset, bits.byteLength / 2);
  at.forEach((i, k) => (view[i] = values[k]!));
}

function kernelsFor(precision: SumPrecision, n: number, wasm: boolean) {
  const stagingBytes = n * 4;
  const store = wasm
    ? new WebAssembly.Memory({ initial: 4, maximum: 4, shared: true })
    : new SharedArrayBuffer(n * 8);
  return createKernels(store, n, precision, 0, stagingBytes);
}

describe('SIMD kernels', () => {
  it('load the module assembled from fedavg.wat', () => {
    expect(fedAvgModule()).toBeInstanceOf(WebAssembly.Module);
  });

  for (const precision of ['float32', 'float64'] as const) {
    for (const dtype of DTYPES) {
      it(`add ${dtype} into a ${precision} sum exactly as the scalar reference does`, () => {
        // 9003: more than two decode tiles and not a multiple of 4, so the vector loop and the
        // scalar tail both run; the adds start at sum element 0, then 3 (unaligned), with
        // lengths n and n - 3 - 2.
        const n = 9003;
        const ref = precision === 'float32' ? new Float32Array(n) : new Float64Array(n);
        const simd = kernelsFor(precision, n, true);
        const js = kernelsFor(precision, n, false);
        for (let i = 0; i < n; i++) ref[i] = simd.sum[i] = js.sum[i] = Math.sin(i) * 1e3;
        const decoded = new Float32Array(n);
        for (const [round, weight] of [3, 0.7, 1234.5, 2].entries()) {
          const bits = randomBits(dtype, n, 7 + round);
          // The third round adds NaN, +Inf and -Inf (and the decode of their payloads).
          if (round === 2) putNonFinite(dtype, bits, [10, 4000, 8999]);
          const [at, count] = round % 2 === 0 ? [0, n] : [3, n - 5];
          simd.staging.set(bits);
          js.staging.set(bits);
          simd.accumulate(dtype, at, count, weight);
          js.accumulate(dtype, at, count, weight);
          decodeToF32(bits, dtype, decoded);
          weightedAccumulate(ref, at, decoded, count, weight);
        }
        // Bit for bit, -0 and NaN included (Object.is).
        expect(Array.from(simd.sum).every((v, i) => Object.is(v, ref[i]))).toBe(true);
        expect(Array.from(js.sum).every((v, i) => Object.is(v, ref[i]))).toBe(true);
        expect(Number.isNaN(simd.sum[10])).toBe(true);
        expect(simd.sum[4000]).toBe(Infinity);
      });
    }
  }

  for (const precision of ['float32', 'float64'] as const) {
    it(`scale a ${precision} sum to float32 exactly as the scalar reference does`, () => {
      const n = 1003;
      const simd = kernelsFor(precision, n, true);
      const js = kernelsFor(precision, n, false);
      for (let i = 0; i < n; i++) simd.sum[i] = js.sum[i] = Math.sin(i) * 10 ** ((i % 13) - 6);
      for (const [i, v] of [
        [5, NaN],
        [6, Infinity],
        [7, -Infinity],
        [8, -0],
        [1001, 3.4e38],
      ] as const)
        simd.sum[i] = js.sum[i] = v;
      const factor = 1 / 7;
      // From element 3: an unaligned start, and n - 3 - 1 elements, so the tail runs too.
      const got = simd.scale(3, n - 4, factor);
      const ref = js.scale(3, n - 4, factor);
      const want = Float32Array.from({ length: n - 4 }, (_, i) => simd.sum[3 + i]! * factor);
      expect(Array.from(got).every((v, i) => Object.is(v, want[i]))).toBe(true);
      expect(Array.from(ref).every((v, i) => Object.is(v, want[i]))).toBe(true);
    });
  }

  it('round float32 to bfloat16 exactly as half.ts does, in place too', () => {
    const n = 1003;
    const k = kernelsFor('float32', n, true);
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = (Math.imul(i, 2654435761) ^ (i << 7)) >>> 0;
    // Ties, NaNs (signalling and quiet), infinities, the largest finite values, zeros, subnormals.
    bits.set([
      0x3f808000, 0x3f818000, 0x7f800001, 0xffc00000, 0x7f800000, 0xff800000, 0x7f7fffff, 0x80000000, 1,
    ]);
    const values = new Float32Array(bits.buffer);
    const want = f32ToBf16(values);
    const src = new Float32Array(k.staging.buffer, k.staging.byteOffset, n);
    src.set(values);
    // In place: the bfloat16 bits over the first half of the float32 values.
    const dst = new Uint16Array(k.staging.buffer, k.staging.byteOffset, n);
    k.toBf16(src, dst);
    expect(Array.from(dst)).toEqual(Array.from(want));
  });

  for (const dtype of DTYPES) {
    it(`find the first NaN/Inf of ${dtype} in the vectors and in the tail`, () => {
      const n = 1003;
      const k = kernelsFor('float32', n, true);
      const inf = dtype === 'F32' ? 0x7f800000 : dtype === 'F16' ? 0x7c00 : 0x7f80;
      const nan = inf | 1;
      const negativeInf = dtype === 'F32' ? 0xff800000 : inf | 0x8000;
      for (const [at, bits] of [
        [0, inf],
        [517, nan],
        [1001, negativeInf],
        [-1, 0],
      ] as const) {
        k.staging.fill(0);
        const view =
          dtype === 'F32'
            ? new Uint32Array(k.staging.buffer, k.staging.byteOffset, n)
            : new Uint16Array(k.staging.buffer, k.staging.byteOffset, n);
        if (at >= 0) {
          view[at] = bits;
          view[at + 1] = bits; // only the first counts
        }
        expect(k.firstNonFinite(dtype, n)).toBe(at);
        if (at >= 0) expect(k.firstNonFinite(dtype, at)).toBe(-1);
      }
    });
  }
});
