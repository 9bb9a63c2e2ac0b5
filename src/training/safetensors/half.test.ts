import { describe, expect, it } from 'vitest';
import {
  bf16BitsToNumber,
  bf16ToF32,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  numberToBf16Bits,
  numberToF16Bits,
} from './half.js';

/** Decodes float16 bits arithmetically, independently of the code under test. */
function refF16(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Slow reference rounding: nearest among the positive encodings 0..limit (whose values grow with
 * the bits), where `limit` stands for Inf placed one ulp past the largest finite; ties to even.
 */
function refRound(x: number, decode: (b: number) => number, limit: number, inf: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0;
  let hi = limit;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (decode(mid) <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - decode(lo);
  const dh = decode(hi) - a;
  const pick = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  return sign | (pick === limit ? inf : pick);
}

/** A 16-bit format under test: its codec, an independent decoder, and where its exponent and mantissa sit. */
interface HalfFormat {
  toF32(bits: Uint16Array): Float32Array;
  fromF32(values: Float32Array): Uint16Array;
  reference(bits: number): number;
  exponentMask: number;
  mantissaMask: number;
}

/**
 * The bit patterns of all 65536 that the codec does not decode exactly (as `reference` does) and
 * encode back to themselves; a NaN must stay a NaN (any payload).
 */
function roundTripFailures(format: HalfFormat): number[] {
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = format.toF32(all);
  const back = format.fromF32(f);
  const wrong: number[] = [];
  for (let h = 0; h < 65536; h++) {
    const ref = format.reference(h);
    const isNaN =
      (back[h]! & format.exponentMask) === format.exponentMask && (back[h]! & format.mantissaMask) !== 0;
    const ok = Number.isNaN(ref) ? Number.isNaN(f[h]!) && isNaN : Object.is(f[h]!, ref) && back[h] === h;
    if (!ok) wrong.push(h);
  }
  return wrong;
}

function f32Bits(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0]!;
}
function fromBits(u: number): number {
  return new Float32Array(Uint32Array.of(u).buffer)[0]!;
}

describe('float16', () => {
  it('decodes all 65536 patterns exactly and round-trips them', () => {
    const format = {
      toF32: f16ToF32,
      fromF32: f32ToF16,
      reference: refF16,
      exponentMask: 0x7c00,
      mantissaMask: 0x3ff,
    };
    expect(roundTripFailures(format)).toEqual([]);
  });

  it('rounds float32 to nearest even, with subnormals, overflow and ties', () => {
    const decode = (b: number): number => (b === 0x7c00 ? 65536 : refF16(b));
    const samples: number[] = [
      0,
      -0,
      1,
      -1,
      65504,
      65519.99,
      65520,
      65536,
      1e6,
      -1e6,
      2 ** -24,
      2 ** -25,
      2 ** -25 * 1.0001,
      3 * 2 ** -25,
      2 ** -14,
      2 ** -14 - 2 ** -25,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      0.1,
      1 / 3,
      1e-10,
    ];
    let seed = 12345;
    for (let i = 0; i < 20000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const v = fromBits(seed);
      if (Number.isFinite(v) && Math.abs(v) < 1e6 && Math.abs(v) > 1e-9) samples.push(v);
      // Also exact midpoints between neighbouring float16 values.
      const h = seed & 0x7bfe;
      samples.push((decode(h) + decode(h + 1)) / 2);
    }
    const src = Float32Array.from(samples);
    const out = f32ToF16(src);
    const wrong = samples.filter((v, i) => out[i] !== refRound(src[i]!, decode, 0x7c00, 0x7c00));
    expect(wrong).toEqual([]);
  });

  it('keeps Inf and NaN', () => {
    expect(numberToF16Bits(Infinity)).toBe(0x7c00);
    expect(numberToF16Bits(-Infinity)).toBe(0xfc00);
    expect(numberToF16Bits(NaN) & 0x7e00).toBe(0x7e00);
    expect(f16BitsToNumber(0x7c00)).toBe(Infinity);
    expect(f16BitsToNumber(0x7e00)).toBeNaN();
    expect(f16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(f16BitsToNumber(0x3c00)).toBe(1);
  });
});

describe('bfloat16', () => {
  it('decodes as the top half of a float32', () => {
    const reference = (h: number) => fromBits(h << 16);
    const format = {
      toF32: bf16ToF32,
      fromF32: f32ToBf16,
      reference,
      exponentMask: 0x7f80,
      mantissaMask: 0x7f,
    };
    expect(roundTripFailures(format)).toEqual([]);
  });

  it('rounds float32 to nearest even, including subnormals and overflow to Inf', () => {
    const decode = (b: number): number => (b === 0x7f80 ? 2 ** 128 : fromBits(b << 16));
    const samples: number[] = [
      0,
      1,
      1 + 2 ** -8,
      1 + 3 * 2 ** -8,
      fromBits(0x7f7fffff),
      fromBits(0x00000001),
    ];
    let seed = 777;
    for (let i = 0; i < 20000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const v = fromBits(seed);
      if (Number.isFinite(v)) samples.push(v);
    }
    const src = Float32Array.from(samples);
    const out = f32ToBf16(src);
    const wrong = samples.filter((v, i) => out[i] !== refRound(src[i]!, decode, 0x7f80, 0x7f80));
    expect(wrong).toEqual([]);
    expect(numberToBf16Bits(Infinity)).toBe(0x7f80);
    expect(numberToBf16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
    expect(numberToBf16Bits(fromBits(0x7fffffff))).not.toBe(0x8000); // NaN never wraps to -0
    expect(bf16BitsToNumber(0x3f80)).toBe(1);
    expect(f32Bits(bf16BitsToNumber(0x8000))).toBe(0x80000000);
  });
});
