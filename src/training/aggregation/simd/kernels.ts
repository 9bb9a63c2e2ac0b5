/**
 * Fused decode-and-accumulate kernels: `sum[i] += weight * decode(src[i])` for F32, F16 and BF16
 * sources into a float32 or float64 sum, in one pass over the source bytes, plus a NaN/Inf scan
 * on the raw bits. Two implementations behind one shape:
 * - WebAssembly SIMD (4 elements per step) over a shared WebAssembly.Memory that holds the sum
 *   and every thread's read buffer, so worker threads add into one sum with no copies;
 * - plain JavaScript over a SharedArrayBuffer, for sums too large for a 32-bit memory (4 GiB).
 *
 * Both compute exactly what the single-threaded reference ({@link weightedAccumulate} after
 * {@link decodeToF32}) computes: the decoded value and the weight multiply and add in float64,
 * and a float32 sum is rounded once on store. Results are therefore bit-identical whatever the
 * implementation or the number of threads (each element is added by one thread, in update order).
 */
import type { AggregatableDtype } from '../../safetensors/dtypes.js';
import { decodeToF32, firstNonFinite as firstNonFiniteJs } from '../../safetensors/read.js';
import { weightedAccumulate } from '../math.js';
import { SIMD, T, encodeModule, ins, OP, type FunctionDef } from './wasm-encode.js';

/** Element type of the running sum. */
export type SumPrecision = 'float32' | 'float64';

/** Where a sum lives: a shared wasm memory (SIMD kernels) or a SharedArrayBuffer (JS kernels). */
export type SumStore = WebAssembly.Memory | SharedArrayBuffer;

/** A wasm32 memory holds at most 65536 pages of 64 KiB. */
export const WASM_PAGE = 65536;
export const WASM_MAX_PAGES = 65536;

const srcSize = { F32: 4, BF16: 2, F16: 2 } as const;

/** Pushes 4 source elements at local 1 as an f32x4 (F16 uses locals 7 and 8 as scratch). */
function decode(dtype: AggregatableDtype): number[] {
  if (dtype === 'F32') return [...ins.get(1), ...ins.mem(SIMD.load)];
  if (dtype === 'BF16')
    return [...ins.get(1), ...ins.mem(SIMD.load16x4U), ...ins.i32(16), ...ins.simd(SIMD.i32x4Shl)];
  const splat = (v: number) => [...ins.i32(v), ...ins.simd(SIMD.i32x4Splat)];
  return [
    ...[...ins.get(1), ...ins.mem(SIMD.load16x4U), ...ins.set(7)], // x: the half bits, zero-extended
    ...[...ins.get(7), ...splat(0x7fff), ...ins.simd(SIMD.and), ...ins.set(8)], // em: without the sign
    // Inf/NaN: all-ones float32 exponent, payload moved up.
    ...[
      ...ins.get(8),
      ...ins.i32(13),
      ...ins.simd(SIMD.i32x4Shl),
      ...splat(0x7f800000),
      ...ins.simd(SIMD.or),
    ],
    // Normal and subnormal halves: (em << 13) read as a float32 is the value times 2^-112, exactly.
    ...[...ins.get(8), ...ins.i32(13), ...ins.simd(SIMD.i32x4Shl)],
    ...[...ins.f32(2 ** 112), ...ins.simd(SIMD.f32x4Splat), ...ins.simd(SIMD.f32x4Mul)],
    ...[...ins.get(8), ...splat(0x7bff), ...ins.simd(SIMD.i32x4GtU), ...ins.simd(SIMD.bitselect)],
    ...[...ins.get(7), ...splat(0x8000), ...ins.simd(SIMD.and), ...ins.i32(16), ...ins.simd(SIMD.i32x4Shl)],
    ...ins.simd(SIMD.or),
  ];
}

const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
const LOW_HALVES = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];

/** sum (at local 0) += weight (f64x2 in local 5) * v (f32x4 in local 6), in float64. */
function accumulate(precision: SumPrecision): number[] {
  const promote = ins.simd(SIMD.f64x2PromoteLowF32x4);
  const fma = [...ins.get(5), ...ins.simd(SIMD.f64x2Mul), ...ins.simd(SIMD.f64x2Add)];
  if (precision === 'float64') {
    return [
      ...[...ins.get(0), ...ins.get(0), ...ins.mem(SIMD.load), ...ins.get(6), ...promote, ...fma],
      ...ins.mem(SIMD.store),
      ...[...ins.get(0), ...ins.get(0), ...ins.mem(SIMD.load, 16), ...ins.get(6), ...ins.get(6)],
      ...[...ins.shuffle(HIGH_HALF), ...promote, ...fma, ...ins.mem(SIMD.store, 16)],
    ];
  }
  const demote = ins.simd(SIMD.f32x4DemoteF64x2Zero);
  return [
    ...ins.get(0), // store address
    ...[...ins.get(0), ...ins.mem(SIMD.load), ...ins.set(7)], // s: 4 float32 of the sum
    ...[...ins.get(7), ...promote, ...ins.get(6), ...promote, ...fma, ...demote],
    ...[...ins.get(7), ...ins.get(7), ...ins.shuffle(HIGH_HALF), ...promote],
    ...[...ins.get(6), ...ins.get(6), ...ins.shuffle(HIGH_HALF), ...promote, ...fma, ...demote],
    ...[...ins.shuffle(LOW_HALVES), ...ins.mem(SIMD.store)],
  ];
}

/** (sumPtr, srcPtr, n, weight): n a multiple of 4. */
function accumulateFunction(dtype: AggregatableDtype, precision: SumPrecision): FunctionDef {
  const shift = dtype === 'F32' ? 2 : 1;
  const body = [
    ...[...ins.get(3), ...ins.simd(SIMD.f64x2Splat), ...ins.set(5)],
    ...[...ins.get(1), ...ins.get(2), ...ins.i32(shift), OP.i32Shl, OP.i32Add, ...ins.set(4)],
    ...[OP.block, OP.blockVoid, OP.loop, OP.blockVoid],
    ...[...ins.get(1), ...ins.get(4), OP.i32GeU, OP.brIf, 1],
    ...decode(dtype),
    ...ins.set(6),
    ...accumulate(precision),
    ...[...ins.get(1), ...ins.i32(4 * srcSize[dtype]), OP.i32Add, ...ins.set(1)],
    ...[...ins.get(0), ...ins.i32(precision === 'float64' ? 32 : 16), OP.i32Add, ...ins.set(0)],
    ...[OP.br, 0, OP.end, OP.end],
  ];
  return {
    name: `acc_${dtype}_${precision}`,
    params: [T.i32, T.i32, T.i32, T.f64],
    results: [],
    locals: [T.i32, T.v128, T.v128, T.v128, T.v128],
    body,
  };
}

/** (srcPtr, n) -> first element of the first vector holding a NaN/Inf, or -1; n a multiple of 8. */
function scanFunction(kind: 'F32' | 'F16' | 'BF16'): FunctionDef {
  const wide = kind === 'F32';
  const mask = kind === 'F32' ? 0x7f800000 : kind === 'F16' ? 0x7c00 : 0x7f80;
  const splat = [...ins.i32(mask), ...ins.simd(wide ? SIMD.i32x4Splat : SIMD.i16x8Splat)];
  const shift = wide ? 2 : 1;
  const body = [
    ...[...ins.get(0), ...ins.set(3)],
    ...[...ins.get(0), ...ins.get(1), ...ins.i32(shift), OP.i32Shl, OP.i32Add, ...ins.set(2)],
    ...[OP.block, OP.blockVoid, OP.loop, OP.blockVoid],
    ...[...ins.get(0), ...ins.get(2), OP.i32GeU, OP.brIf, 1],
    // An all-ones exponent field is Inf or NaN, whatever the payload.
    ...[...ins.get(0), ...ins.mem(SIMD.load), ...splat, ...ins.simd(SIMD.and), ...splat],
    ...[...ins.simd(wide ? SIMD.i32x4Eq : SIMD.i16x8Eq), ...ins.simd(SIMD.anyTrue)],
    ...[
      OP.if,
      OP.blockVoid,
      ...ins.get(0),
      ...ins.get(3),
      OP.i32Sub,
      ...ins.i32(shift),
      OP.i32ShrU,
      OP.ret,
      OP.end,
    ],
    ...[...ins.get(0), ...ins.i32(16), OP.i32Add, ...ins.set(0)],
    ...[OP.br, 0, OP.end, OP.end],
    ...ins.i32(-1),
  ];
  return { name: `scan_${kind}`, params: [T.i32, T.i32], results: [T.i32], locals: [T.i32, T.i32], body };
}

const DTYPES: AggregatableDtype[] = ['F32', 'F16', 'BF16'];

/** The kernels' module bytes. */
export function kernelModuleBytes(): Uint8Array {
  const fns = [
    ...DTYPES.flatMap((d) => [accumulateFunction(d, 'float32'), accumulateFunction(d, 'float64')]),
    ...DTYPES.map(scanFunction),
  ];
  return encodeModule(fns, WASM_MAX_PAGES);
}

/** One thread's view of a sum and its own read buffer, with the kernels that work on them. */
export interface Kernels {
  /** The running sum, flat order. */
  readonly sum: Float32Array | Float64Array;
  /** This thread's read buffer: read source bytes here, then call the kernels. */
  readonly staging: Uint8Array;
  /** sum[at + i] += weight * decode(staging elements i) for i < n. */
  accumulate(dtype: AggregatableDtype, at: number, n: number, weight: number): void;
  /** Index of the first NaN/Inf among the first n elements of staging, or -1. */
  firstNonFinite(dtype: AggregatableDtype, n: number): number;
}

/** Bytes a sum of `elements` takes in `precision`, rounded up to 64 so staging stays aligned. */
export function sumBytes(elements: number, precision: SumPrecision): number {
  return Math.ceil((elements * (precision === 'float64' ? 8 : 4)) / 64) * 64;
}

/**
 * Allocates where a sum and `threads` read buffers of `stagingBytes` live: a shared wasm memory
 * when it fits in 4 GiB, else a SharedArrayBuffer for the sum (read buffers are then per thread).
 */
export function allocateSum(
  elements: number,
  precision: SumPrecision,
  threads: number,
  stagingBytes: number,
): SumStore {
  const bytes = sumBytes(elements, precision) + threads * stagingBytes;
  const pages = Math.ceil(bytes / WASM_PAGE);
  if (pages <= WASM_MAX_PAGES)
    return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  return new SharedArrayBuffer(sumBytes(elements, precision));
}

/** The sum's typed view in `store`. */
export function sumView(
  store: SumStore,
  elements: number,
  precision: SumPrecision,
): Float32Array | Float64Array {
  const buffer = store instanceof SharedArrayBuffer ? store : store.buffer;
  return precision === 'float64'
    ? new Float64Array(buffer, 0, elements)
    : new Float32Array(buffer, 0, elements);
}

/**
 * Kernels for thread `thread` (0-based) over a sum of `elements` in `store`. With a wasm memory,
 * the thread's read buffer is its slot after the sum; with a SharedArrayBuffer, a buffer of its own.
 */
export function createKernels(
  store: SumStore,
  elements: number,
  precision: SumPrecision,
  thread: number,
  stagingBytes: number,
): Kernels {
  const sum = sumView(store, elements, precision);
  if (store instanceof SharedArrayBuffer) return jsKernels(sum, new Uint8Array(stagingBytes));
  const base = sumBytes(elements, precision) + thread * stagingBytes;
  if (base + stagingBytes > store.buffer.byteLength) throw new RangeError('no read buffer for this thread');
  const staging = new Uint8Array(store.buffer, base, stagingBytes);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(kernelModuleBytes()), {
    env: { mem: store },
  });
  const fns = instance.exports as Record<string, unknown>;
  const acc = Object.fromEntries(DTYPES.map((d) => [d, fns[`acc_${d}_${precision}`]!])) as Record<
    AggregatableDtype,
    (sumPtr: number, src: number, n: number, w: number) => void
  >;
  const scan = Object.fromEntries(DTYPES.map((d) => [d, fns[`scan_${d}`]!])) as Record<
    AggregatableDtype,
    (src: number, n: number) => number
  >;
  const js = jsKernels(sum, staging);
  const bytesPer = precision === 'float64' ? 8 : 4;
  return {
    sum,
    staging,
    accumulate(dtype, at, n, weight) {
      const vectorised = n & ~3;
      acc[dtype](sum.byteOffset + at * bytesPer, base, vectorised, weight);
      if (vectorised < n) js.accumulateFrom(dtype, at, vectorised, n, weight);
    },
    firstNonFinite(dtype, n) {
      const vectorised = n & ~7;
      const group = scan[dtype](base, vectorised);
      // The vector found holds a non-finite value; the JS scan names which one (or scans the tail).
      const from = group >= 0 ? group : vectorised;
      const to = group >= 0 ? group + 8 : n;
      const size = srcSize[dtype];
      const i = firstNonFiniteJs(staging.subarray(from * size, to * size), dtype);
      return i >= 0 ? from + i : -1;
    },
  };
}

interface JsKernels extends Kernels {
  /** accumulate() restricted to elements [from, to) of the read buffer. */
  accumulateFrom(dtype: AggregatableDtype, at: number, from: number, to: number, weight: number): void;
}

function jsKernels(sum: Float32Array | Float64Array, staging: Uint8Array): JsKernels {
  let scratch = new Float32Array(0);
  const accumulateFrom = (dtype: AggregatableDtype, at: number, from: number, to: number, weight: number) => {
    const n = to - from;
    if (scratch.length < n) scratch = new Float32Array(n);
    const size = srcSize[dtype];
    decodeToF32(staging.subarray(from * size, to * size), dtype, scratch);
    weightedAccumulate(sum, at + from, scratch, n, weight);
  };
  return {
    sum,
    staging,
    accumulateFrom,
    accumulate: (dtype, at, n, weight) => accumulateFrom(dtype, at, 0, n, weight),
    firstNonFinite: (dtype, n) => firstNonFiniteJs(staging.subarray(0, n * srcSize[dtype]), dtype),
  };
}
