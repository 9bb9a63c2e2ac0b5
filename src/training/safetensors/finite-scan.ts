/**
 * NaN/Inf detection on raw bits with WebAssembly SIMD, over a WebAssembly memory (shared
 * between threads or not) that the caller fills: 16 bytes per instruction instead of one
 * element per JS loop turn (about 4x faster than the JS loop on this project's machines). A
 * value is non-finite when its exponent field is all ones, whatever its sign and payload, so
 * the test is exact.
 *
 * The kernel's source is finite-scan.wat, assembled at build time (scripts/build-wasm.ts) into
 * finite-scan.wasm and finite-scan.shared.wasm beside it; when the engine cannot run it, the same
 * test runs as a JS loop.
 */
import { dtypeSize, type Dtype } from './dtypes.js';
import { firstNonFinite } from './read.js';
import { wasmModuleBytes } from './wasm-module.js';

/** Exponent masks: a value is non-finite when (bits & mask) === mask. */
const MASK = { F32: 0x7f800000, F16: 0x7c00, BF16: 0x7f80 } as const;

/**
 * The assembled module, importing a shared memory or an ordinary one (the memory's kind must
 * match). Exports `s32` and `s16`: `(ptr, end, mask) -> i32`, see finite-scan.wat.
 */
function moduleBytes(shared: boolean): Uint8Array {
  return wasmModuleBytes(
    new URL(shared ? './finite-scan.shared.wasm' : './finite-scan.wasm', import.meta.url),
  );
}

/** A WebAssembly.Memory (the project's TypeScript libs do not declare WebAssembly). */
export interface WasmMemory {
  readonly buffer: ArrayBufferLike;
}

type ScanFn = (ptr: number, end: number, mask: number) => number;

/** The parts of the WebAssembly global used here. */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

const compiled = new Map<boolean, object | null>();
function wasmModule(shared: boolean): object | null {
  if (!compiled.has(shared)) {
    const bytes = moduleBytes(shared);
    try {
      compiled.set(shared, wasm ? new wasm.Module(bytes) : null);
    } catch {
      compiled.set(shared, null); // no SIMD: the JS loop does the work
    }
  }
  return compiled.get(shared)!;
}

/** A shared WebAssembly memory of at least `bytes` bytes (whole 64 KiB pages). */
export function sharedMemory(bytes: number): WasmMemory {
  return scanMemory(bytes, true);
}

/**
 * A WebAssembly memory of at least `bytes` bytes (whole 64 KiB pages), shared between threads
 * or not. Copies into an ordinary memory are plain memcpy at any alignment; copies into a shared
 * one are word by word only when source and target are equally aligned (else byte by byte).
 * Either kind starts on a page boundary, which O_DIRECT writes from it need.
 */
export function scanMemory(bytes: number, shared: boolean): WasmMemory {
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  if (wasm) {
    try {
      return new wasm.Memory({ initial: pages, maximum: pages, shared });
    } catch {
      // below
    }
  }
  // Scanned by the JS loop.
  return { buffer: shared ? new SharedArrayBuffer(pages * 65536) : new ArrayBuffer(pages * 65536) };
}

/** Finds non-finite values in a memory's bytes. */
export interface FiniteScanner {
  /** True when the SIMD module runs (false: the JS loop). */
  readonly simd: boolean;
  /** Index of the first non-finite `dtype` element in memory [ptr, ptr + len), or -1. */
  firstNonFinite(ptr: number, len: number, dtype: Dtype): number;
}

/** A scanner over `memory` (as made by {@link scanMemory}, in this thread or another). */
export function createFiniteScanner(memory: WasmMemory): FiniteScanner {
  const bytes = () => new Uint8Array(memory.buffer);
  const mod = wasmModule(memory.buffer instanceof SharedArrayBuffer);
  let fns: { s32: ScanFn; s16: ScanFn } | null = null;
  if (mod && wasm) {
    try {
      fns = new wasm.Instance(mod, { e: { m: memory } }).exports as unknown as {
        s32: ScanFn;
        s16: ScanFn;
      };
    } catch {
      fns = null;
    }
  }
  const js = (ptr: number, len: number, dtype: Dtype) =>
    firstNonFinite(bytes().subarray(ptr, ptr + len), dtype);
  if (!fns) return { simd: false, firstNonFinite: js };
  const { s32, s16 } = fns;
  return {
    simd: true,
    firstNonFinite(ptr, len, dtype) {
      if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') return js(ptr, len, dtype);
      const size = dtypeSize(dtype);
      const whole = len - (len % 64);
      const hit = (dtype === 'F32' ? s32 : s16)(ptr, ptr + whole, MASK[dtype]);
      // The block that hit (or the tail past the last whole block) is searched element by element.
      const from = hit < ptr + whole ? hit : ptr + whole;
      const to = hit < ptr + whole ? hit + 64 : ptr + len;
      const k = js(from, to - from, dtype);
      return k < 0 ? -1 : (from - ptr) / size + k;
    },
  };
}
