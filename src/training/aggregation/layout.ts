/**
 * The flat element space aggregation works in: the global model's tensors, in their file
 * order, laid end to end. A chunk is a range [start, end) of that space; every update is read
 * chunk by chunk through its own offsets, so updates written by other libraries (which order
 * tensors differently) aggregate the same.
 */
import { dtypeSize, isAggregatable, type AggregatableDtype } from '../safetensors/dtypes.js';
import type { SafetensorsHeader, TensorInfo } from '../safetensors/header.js';

/** A global header whose tensors are all aggregatable, with their flat positions. */
export interface FlatLayout {
  header: SafetensorsHeader;
  /** Global tensors in file order. */
  tensors: (TensorInfo & { dtype: AggregatableDtype })[];
  /** `flatStart[g]`: flat index of the first element of tensor g; one extra entry holds the total. */
  flatStart: number[];
  totalElements: number;
  /** Largest element size among the tensors (bytes). */
  maxElementSize: number;
}

/** A failure to build a layout. */
export interface LayoutFailure {
  ok: false;
  code: 'unsupported_dtype';
  message: string;
  tensor: string;
}

/** Builds the flat layout of a global header, refusing dtypes other than F32, F16 and BF16. */
export function flatLayout(header: SafetensorsHeader): { ok: true; layout: FlatLayout } | LayoutFailure {
  const flatStart: number[] = [];
  let total = 0;
  let maxElementSize = 1;
  for (const t of header.tensors) {
    if (!isAggregatable(t.dtype)) {
      const message = `tensor "${t.name}" has dtype ${t.dtype}; only F32, F16 and BF16 aggregate`;
      return { ok: false, code: 'unsupported_dtype', message, tensor: t.name };
    }
    flatStart.push(total);
    total += t.numel;
    maxElementSize = Math.max(maxElementSize, dtypeSize(t.dtype));
  }
  flatStart.push(total);
  const tensors = header.tensors as FlatLayout['tensors'];
  return { ok: true, layout: { header, tensors, flatStart, totalElements: total, maxElementSize } };
}

/** One piece of a chunk that lies in a single tensor. */
export interface ChunkSegment {
  /** Index of the global tensor. */
  tensor: number;
  /** First element of the piece, within the tensor. */
  element: number;
  /** Number of elements. */
  count: number;
  /** Offset of the piece within the chunk (elements). */
  chunkOffset: number;
}

/** Splits the flat range [start, end) into per-tensor pieces, in order. */
export function chunkSegments(layout: FlatLayout, start: number, end: number): ChunkSegment[] {
  const out: ChunkSegment[] = [];
  const fs = layout.flatStart;
  // From the last tensor starting at or before `start`.
  for (let g = locate(layout, start).tensor; g < layout.tensors.length && fs[g]! < end; g++) {
    const s = Math.max(start, fs[g]!);
    const e = Math.min(end, fs[g + 1]!);
    if (e > s) out.push({ tensor: g, element: s - fs[g]!, count: e - s, chunkOffset: s - start });
  }
  return out;
}

/** The flat ranges [start, end) of `chunkElements` elements covering the whole layout. */
export function* chunkRanges(layout: FlatLayout, chunkElements: number): Generator<[number, number]> {
  const step = Math.max(1, Math.floor(chunkElements));
  for (let s = 0; s < layout.totalElements; s += step) yield [s, Math.min(s + step, layout.totalElements)];
}

/** The tensor (index in the layout) and element within it of flat index `flat`. */
export function locate(layout: FlatLayout, flat: number): { tensor: number; element: number } {
  const fs = layout.flatStart;
  // Binary search for the last tensor starting at or before `flat`.
  let lo = 0;
  let hi = layout.tensors.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (fs[mid]! <= flat) lo = mid;
    else hi = mid - 1;
  }
  return { tensor: lo, element: flat - fs[lo]! };
}

/**
 * Splits [0, totalElements) into `parts` contiguous slices of nearly equal size whose inner
 * boundaries fall on multiples of 16 elements (so every slice's sum starts 64-byte aligned).
 */
export function sliceRanges(totalElements: number, parts: number): [number, number][] {
  const out: [number, number][] = [];
  for (let t = 0; t < parts; t++) {
    const cut = (k: number) =>
      k >= parts ? totalElements : Math.floor((totalElements * k) / parts / 16) * 16;
    out.push([cut(t), cut(t + 1)]);
  }
  return out;
}
