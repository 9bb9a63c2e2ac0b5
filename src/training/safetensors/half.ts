/**
 * float16 / bfloat16 <-> float32 conversions, table-free.
 *
 * Bulk functions work on bit patterns held in Uint16Array and reinterpret float32 through a
 * Uint32Array view of the same memory, so each element costs a few integer ops and no
 * allocation. float32 -> half rounds to nearest, ties to even, with correct subnormals,
 * overflow to Inf and NaN kept NaN (quiet). Typed arrays use the platform byte order; every
 * platform Node supports for this project is little-endian, as safetensors is.
 */

/** 2^-24: the value of one unit of a float16 subnormal mantissa. */
const F16_SUBNORMAL_UNIT = 5.960464477539063e-8;

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function checkDst(srcLength: number, dstLength: number): void {
  if (dstLength < srcLength) throw new RangeError(`destination holds ${dstLength} < ${srcLength} elements`);
}

/** Converts float16 bit patterns to float32 (exact: every float16 is a float32). */
export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkDst(src.length, dst.length);
  const u = u32View(dst);
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const h = src[i]!;
    const em = h & 0x7fff;
    if (em >= 0x0400 && em < 0x7c00) {
      // Normal: move the fields up and rebias the exponent by (127 - 15) << 23.
      u[i] = ((h & 0x8000) << 16) | ((em << 13) + 0x38000000);
    } else if (em >= 0x7c00) {
      // Inf or NaN: all-ones exponent, payload kept.
      u[i] = ((h & 0x8000) << 16) | 0x7f800000 | ((em & 0x3ff) << 13);
    } else {
      // Zero or subnormal: mantissa * 2^-24 is exact in float32 (where it is normal).
      const v = em * F16_SUBNORMAL_UNIT;
      dst[i] = h & 0x8000 ? -v : v;
    }
  }
  return dst;
}

/** Converts bfloat16 bit patterns to float32 (exact: bfloat16 is the top half of a float32). */
export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkDst(src.length, dst.length);
  const u = u32View(dst);
  const n = src.length;
  for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
  return dst;
}

/** Rounds one float32 bit pattern to float16 bits (nearest, ties to even). */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x7f800000) {
    // Inf stays Inf; NaN keeps the top of its payload and is forced quiet so it stays NaN.
    return a === 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00 | ((a >>> 13) & 0x3ff);
  }
  // 65520 is halfway between 65504 (max float16, odd mantissa) and 65536: ties go to Inf.
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a >= 0x38800000) {
    // Normal float16: add the rounding bias (0xfff plus the lowest kept bit, for ties to even),
    // rebias the exponent and drop 13 mantissa bits; a carry correctly bumps the exponent.
    return sign | ((a + 0xfff + ((a >>> 13) & 1) - 0x38000000) >>> 13);
  }
  // Below 2^-25 everything rounds to zero (2^-25 itself is a tie and goes to even, zero).
  if (a <= 0x33000000) return sign;
  // Subnormal float16: value = m * 2^(e-150); in units of 2^-24 that is m >> (126 - e).
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let r = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (r & 1) === 1)) r++;
  return sign | r;
}

/** Rounds one float32 bit pattern to bfloat16 bits (nearest, ties to even). */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN stays NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest even; overflow lands on Inf.
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Converts float32 values to float16 bit patterns, rounding to nearest even. */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkDst(src.length, dst.length);
  const u = u32View(src);
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = f32BitsToF16Bits(u[i]!);
  return dst;
}

/** Converts float32 values to bfloat16 bit patterns, rounding to nearest even. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkDst(src.length, dst.length);
  const u = u32View(src);
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = f32BitsToBf16Bits(u[i]!);
  return dst;
}

/** float16 bits -> number. */
export function f16BitsToNumber(h: number): number {
  const one = new Float32Array(1);
  f16ToF32(Uint16Array.of(h), one);
  return one[0]!;
}

/** bfloat16 bits -> number. */
export function bf16BitsToNumber(h: number): number {
  return bf16ToF32(Uint16Array.of(h))[0]!;
}

/** number -> float16 bits. The number is first rounded to float32, as a tensor would hold it. */
export function numberToF16Bits(x: number): number {
  return f32ToF16(Float32Array.of(x))[0]!;
}

/** number -> bfloat16 bits. The number is first rounded to float32, as a tensor would hold it. */
export function numberToBf16Bits(x: number): number {
  return f32ToBf16(Float32Array.of(x))[0]!;
}
