/**
 * Decode-and-accumulate kernels: `sum[i] += weight * decode(src[i])` for F32, F16 and BF16
 * sources into a float32 or float64 sum, in one pass over the source bytes (16-bit sources are
 * decoded through a tile that stays in cache), plus a NaN/Inf scan on the raw bits. Two
 * implementations behind one shape:
 * - WebAssembly SIMD (4 elements per step; the source is fedavg.wat beside this file, the NaN/Inf
 *   scan finite-scan.wat) over a shared WebAssembly.Memory that holds the sum and every thread's
 *   read buffer, so worker threads add into one sum with no copies;
 * - plain JavaScript over a SharedArrayBuffer, for sums too large for a 32-bit memory (4 GiB).
 *
 * Both compute exactly what the single-threaded reference ({@link weightedAccumulate} after
 * {@link decodeToF32}) computes: the decoded value and the weight multiply and add in float64,
 * and a float32 sum is rounded once on store. Results are therefore bit-identical whatever the
 * implementation or the number of threads (each element is added by one thread, in update order).
 */
import type { AggregatableDtype } from '../../safetensors/dtypes.js';
import { createFiniteScanner } from '../../safetensors/finite-scan.js';
import { f32ToBf16 } from '../../safetensors/half.js';
import { decodeToF32, firstNonFinite as firstNonFiniteJs } from '../../safetensors/read.js';
import { wasmModuleBytes } from '../../safetensors/wasm-module.js';
import { weightedAccumulate } from '../math.js';

/** Element type of the running sum. */
export type SumPrecision = 'float32' | 'float64';

/** Where a sum lives: a shared wasm memory (SIMD kernels) or a SharedArrayBuffer (JS kernels). */
export type SumStore = WebAssembly.Memory | SharedArrayBuffer;

/** A wasm32 memory holds at most 65536 pages of 64 KiB. */
export const WASM_PAGE = 65536;
export const WASM_MAX_PAGES = 65536;

/**
 * Elements of the float32 tile each thread decodes F16/BF16 into before adding (16 KiB: it stays
 * in the first-level cache between the decode and the add).
 */
const TILE_ELEMENTS = 4096;
const TILE_BYTES = TILE_ELEMENTS * 4;

const srcSize = { F32: 4, BF16: 2, F16: 2 } as const;

/** The exports of fedavg.wat. */
interface FedAvgExports {
  add32(sumPtr: number, valuesPtr: number, n: number, weight: number): void;
  add64(sumPtr: number, valuesPtr: number, n: number, weight: number): void;
  f16(srcPtr: number, dstPtr: number, n: number): void;
  bf16(srcPtr: number, dstPtr: number, n: number): void;
  scale32(sumPtr: number, dstPtr: number, n: number, factor: number): void;
  scale64(sumPtr: number, dstPtr: number, n: number, factor: number): void;
  to_bf16(srcPtr: number, dstPtr: number, n: number): void;
}

let compiled: WebAssembly.Module | undefined;
/** The FedAvg kernels' module (fedavg.wat, assembled at build time), compiled once per thread. */
export function fedAvgModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(wasmModuleBytes(new URL('./fedavg.wasm', import.meta.url)));
  return compiled;
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
  /**
   * Writes float32(sum[at + i] * factor) for i < n over the read buffer, from its first byte, and
   * returns that view (n at most the read buffer's bytes / 4).
   */
  scale(at: number, n: number, factor: number): Float32Array;
  /**
   * Rounds float32 values to bfloat16 bits (as f32ToBf16), in place when dst starts at or below
   * src in the same buffer; both views lie in the read buffer.
   */
  toBf16(src: Float32Array, dst: Uint16Array): void;
}

/** Bytes a sum of `elements` takes in `precision`, rounded up to 64 so staging stays aligned. */
export function sumBytes(elements: number, precision: SumPrecision): number {
  return Math.ceil((elements * (precision === 'float64' ? 8 : 4)) / 64) * 64;
}

/** Bytes of one thread's slot after the sum: its read buffer and its decode tile. */
function slotBytes(stagingBytes: number): number {
  return stagingBytes + TILE_BYTES;
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
  const bytes = sumBytes(elements, precision) + threads * slotBytes(stagingBytes);
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
  const base = sumBytes(elements, precision) + thread * slotBytes(stagingBytes);
  const tile = base + stagingBytes;
  if (tile + TILE_BYTES > store.buffer.byteLength) throw new RangeError('no read buffer for this thread');
  const staging = new Uint8Array(store.buffer, base, stagingBytes);
  const wasm = new WebAssembly.Instance(fedAvgModule(), { env: { mem: store } })
    .exports as unknown as FedAvgExports;
  const add = precision === 'float64' ? wasm.add64 : wasm.add32;
  const scanner = createFiniteScanner(store);
  const js = jsKernels(sum, staging);
  const bytesPer = precision === 'float64' ? 8 : 4;
  return {
    sum,
    staging,
    accumulate(dtype, at, n, weight) {
      const vectorised = n & ~3;
      const sumAt = sum.byteOffset + at * bytesPer;
      if (dtype === 'F32') add(sumAt, base, vectorised, weight);
      else {
        const decode = dtype === 'F16' ? wasm.f16 : wasm.bf16;
        for (let i = 0; i < vectorised; i += TILE_ELEMENTS) {
          const count = Math.min(TILE_ELEMENTS, vectorised - i);
          decode(base + i * 2, tile, count);
          add(sumAt + i * bytesPer, tile, count, weight);
        }
      }
      if (vectorised < n) js.accumulateFrom(dtype, at, vectorised, n, weight);
    },
    firstNonFinite: (dtype, n) => scanner.firstNonFinite(base, n * srcSize[dtype], dtype),
    scale(at, n, factor) {
      const vectorised = n & ~3;
      (precision === 'float64' ? wasm.scale64 : wasm.scale32)(
        sum.byteOffset + at * bytesPer,
        base,
        vectorised,
        factor,
      );
      const out = new Float32Array(staging.buffer, base, n);
      for (let i = vectorised; i < n; i++) out[i] = sum[at + i]! * factor;
      return out;
    },
    toBf16(src, dst) {
      const vectorised = src.length & ~7;
      wasm.to_bf16(src.byteOffset, dst.byteOffset, vectorised);
      if (vectorised < src.length) f32ToBf16(src.subarray(vectorised), dst.subarray(vectorised));
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
    scale(at, n, factor) {
      const out = new Float32Array(staging.buffer, staging.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = sum[at + i]! * factor;
      return out;
    },
    toBf16: (src, dst) => void f32ToBf16(src, dst),
  };
}
