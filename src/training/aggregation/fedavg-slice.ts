/**
 * One thread's share of a parallel FedAvg (see fedavg-session.ts): the slice [start, end) of the
 * flat space. Every update is read in that slice only, in large blocking reads straight into the
 * thread's read buffer, and decoded and added to the shared sum in the same pass by the SIMD
 * kernels. Threads never write the same element, so they need no locks. At the finish each
 * thread writes a part of the output file (any part: it reads the shared sum there).
 */
import type { SafetensorsHeader } from '../safetensors/header.js';
import { flatLayout, locate, type FlatLayout, type LayoutFailure } from './layout.js';
import { writePart, type OutputPart, type PartDigests } from './parallel-output.js';
import { createKernels, type Kernels, type SumPrecision, type SumStore } from './simd/kernels.js';
import type { RejectedInput } from './types.js';
import { UpdateReader } from './update-reader.js';

/** What a slice thread is started with (structured-clone data: the store is shared, not copied). */
export interface SliceSetup {
  header: SafetensorsHeader;
  store: SumStore;
  precision: SumPrecision;
  /** This thread's number: its read buffer's slot in a wasm store. */
  thread: number;
  /** The flat range this thread adds. */
  start: number;
  end: number;
  /** Bytes of the thread's read buffer: elements per read x the largest element size. */
  stagingBytes: number;
}

/** Outcome of one slice's scan or add. `flat`: where a NaN/Inf was found. */
export type SliceOutcome =
  | { ok: true; bytesRead: number }
  | (Omit<RejectedInput, 'index'> & { ok: false; bytesRead: number; flat?: number });

/** One thread's share of a parallel FedAvg. */
export interface FedAvgSlice {
  readonly layout: FlatLayout;
  /** Checks the update's header and looks for NaN/Inf in this slice, on the raw bits. */
  scan(path: string): Promise<SliceOutcome>;
  /** Checks the update's header and adds `weight * update` over this slice. */
  add(path: string, weight: number): Promise<SliceOutcome>;
  /**
   * Writes its part of sum / totalWeight (any part: the sum is shared) with the output's dtypes
   * into the output's temp file, after every add (parallel-output.ts).
   */
  finishPart(tmpPath: string, out: SafetensorsHeader, part: OutputPart, totalWeight: number): PartDigests;
}

/** Builds a slice; fails only when the header has a dtype that does not aggregate. */
export function createSlice(setup: SliceSetup): { ok: true; slice: FedAvgSlice } | LayoutFailure {
  const built = flatLayout(setup.header);
  if (!built.ok) return built;
  const layout = built.layout;
  const k: Kernels = createKernels(
    setup.store,
    layout.totalElements,
    setup.precision,
    setup.thread,
    setup.stagingBytes,
  );
  // Touch this slice of the sum and the read buffer now, while the thread starts: the first
  // write to each fresh page faults, and under load those faults cost more than the adds.
  touch(k.sum, setup.start, setup.end);
  k.staging.fill(0);
  const perRead = Math.max(1, Math.floor(setup.stagingBytes / layout.maxElementSize));
  const ranges = (): [number, number][] => {
    const out: [number, number][] = [];
    for (let s = setup.start; s < setup.end; s += perRead) out.push([s, Math.min(s + perRead, setup.end)]);
    return out;
  };

  const withReader = async (path: string, fn: (r: UpdateReader) => SliceOutcome): Promise<SliceOutcome> => {
    const opened = await UpdateReader.open(path, layout);
    if (!opened.ok) return { ...opened, bytesRead: 0 };
    try {
      return fn(opened.reader);
    } finally {
      await opened.reader.close();
    }
  };

  const slice: FedAvgSlice = {
    layout,
    scan: (path) =>
      withReader(path, (reader) => {
        let found = -1;
        for (const [s, e] of ranges()) {
          reader.readPiecesSync(s, e, k.staging, (dtype, offset, count) => {
            if (found >= 0) return;
            const i = k.firstNonFinite(dtype, count);
            if (i >= 0) found = s + offset + i;
          });
          if (found >= 0) {
            const { tensor, element } = locate(layout, found);
            const name = layout.tensors[tensor]!.name;
            const message = `tensor "${name}" holds a non-finite value at element ${element}`;
            return {
              ok: false,
              code: 'non_finite',
              message,
              tensor: name,
              flat: found,
              bytesRead: reader.bytesRead,
            };
          }
        }
        return { ok: true, bytesRead: reader.bytesRead };
      }),
    add: (path, weight) =>
      withReader(path, (reader) => {
        for (const [s, e] of ranges()) {
          reader.readPiecesSync(s, e, k.staging, (dtype, offset, count) =>
            k.accumulate(dtype, s + offset, count, weight),
          );
        }
        return { ok: true, bytesRead: reader.bytesRead };
      }),
    finishPart(tmpPath, out, part, totalWeight) {
      // The read buffer is free between adds: the scaled values are converted and written from it.
      const perWrite = Math.max(1, Math.floor(k.staging.byteLength / 4));
      const scale = (at: number, n: number) => k.scale(at, n, 1 / totalWeight);
      return writePart(layout, out, part, tmpPath, perWrite, scale, k.toBf16);
    },
  };
  return { ok: true, slice };
}

/** Writes each element of sum[start, end) to itself (values unchanged: a resumed sum stays). */
function touch(sum: Float32Array | Float64Array, start: number, end: number): void {
  for (let i = start; i < end; i += 512) sum[i] = sum[i]!;
}
