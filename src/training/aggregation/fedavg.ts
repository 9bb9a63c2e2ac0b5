/**
 * Streaming FedAvg: a running weighted sum of updates, one update at a time, in memory
 * proportional to one model whatever the number of updates.
 *
 * Choices:
 * - The sum is a Float64Array. Weights are sample counts (thousands) and rounds may sum
 *   hundreds of updates: float64 keeps the mean exact to float32 precision where a float32
 *   sum would lose low bits with every add; JS arithmetic is float64 anyway, so it costs no
 *   conversion, only 8 bytes per parameter. It lives in a SharedArrayBuffer so a worker
 *   thread can own the adds while the owner of the session can read or snapshot it.
 * - Finiteness is checked in a first pass over the raw bits (no conversion), and the update is
 *   added in a second pass only when the whole file is finite: a rejected update never
 *   touches the sum (undoing a partial add by subtraction would not be exact). The second
 *   read usually comes from the page cache.
 */
import type { WrittenFile } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { FlatOutput } from './flat-output.js';
import { chunkRanges, flatLayout, type FlatLayout, type LayoutFailure } from './layout.js';
import { weightedAccumulate } from './math.js';
import { UpdateReader } from './update-reader.js';
import { invalidWeight, nothingAdded, serialCalls, withTally, type Tally } from './sum-state.js';
import type { RejectedInput } from './types.js';

/**
 * Default FedAvg chunk: 256 Ki elements (1 MiB as float32): large enough that syscalls and
 * promise hops are noise, small enough that buffers stay in cache and add little to the sum.
 */
export const DEFAULT_FEDAVG_CHUNK_ELEMENTS = 1 << 18;

/** Options of {@link createAccumulator}. */
export interface AccumulatorOptions {
  /** Elements per chunk. Default {@link DEFAULT_FEDAVG_CHUNK_ELEMENTS}. */
  chunkElements?: number;
  /** FedProx mu, kept for the round to hand to clients; aggregation is FedAvg's. Default undefined. */
  mu?: number;
  /**
   * Element type of the sum. 'float64' (default) keeps the mean exact to float32 precision;
   * 'float32' halves its memory to one model size (float32 updates) at a relative error of about
   * N x 2^-24 for N updates, far below what training notices.
   */
  precision?: 'float64' | 'float32';
  /** Resume from an existing sum (e.g. rebuilt in another thread); must hold totalElements of `precision`. */
  sum?: SharedArrayBuffer;
  /** With `sum`: the weight and count already in it. Default 0. */
  totalWeight?: number;
  count?: number;
}

/** Options of {@link FedAvgAccumulator.add}. */
export interface AddOptions {
  /**
   * The file was already scanned for NaN/Inf (an upload checked on arrival): skip the first
   * pass. Its header is still checked. Default false.
   */
  verified?: boolean;
}

/** Outcome of {@link FedAvgAccumulator.add}. */
export type AddOutcome =
  | { ok: true; count: number; totalWeight: number; bytesRead: number }
  | (Omit<RejectedInput, 'index'> & { ok: false; bytesRead: number });

/** Outcome of {@link FedAvgAccumulator.finish}. */
export type FinishOutcome =
  | ({ ok: true; count: number; totalWeight: number; outPath: string } & Omit<WrittenFile, 'path'>)
  | { ok: false; code: 'no_updates'; message: string };

/** A running weighted sum of updates that share the global model's header. */
export interface FedAvgAccumulator {
  readonly layout: FlatLayout;
  /** The weighted sum, one float64 (or float32) per parameter, in flat order (backed by a SharedArrayBuffer). */
  readonly sum: Float64Array | Float32Array;
  readonly count: number;
  readonly totalWeight: number;
  /** Body bytes read by all adds (both passes). */
  readonly bytesRead: number;
  /** FedProx mu when given. */
  readonly mu: number | undefined;
  /**
   * Adds `weight * update`; a rejected update (bad header, mismatch, NaN/Inf, bad weight) leaves
   * the sum unchanged. Rejects on I/O errors; one during the second pass leaves part of the update
   * in the sum, and from then on every call rejects (rebuild the sum from the journal).
   */
  add(path: string, weight: number, options?: AddOptions): Promise<AddOutcome>;
  /** Writes sum / totalWeight with the global dtypes to `outPath` (atomically). Can be called again. */
  finish(outPath: string, metadata?: Record<string, string>): Promise<FinishOutcome>;
}

/**
 * Creates a FedAvg (or FedProx) accumulator for updates shaped like `header`.
 * Fails with `unsupported_dtype` when a tensor is not F32, F16 or BF16.
 */
export function createAccumulator(
  header: SafetensorsHeader,
  options: AccumulatorOptions = {},
): { ok: true; accumulator: FedAvgAccumulator } | LayoutFailure {
  const built = flatLayout(header);
  if (!built.ok) return built;
  const layout = built.layout;
  const chunkElements = Math.max(1, options.chunkElements ?? DEFAULT_FEDAVG_CHUNK_ELEMENTS);
  const f32 = options.precision === 'float32';
  const bytesPer = f32 ? 4 : 8;
  const shared = options.sum ?? new SharedArrayBuffer(layout.totalElements * bytesPer);
  if (shared.byteLength < layout.totalElements * bytesPer) {
    throw new RangeError('sum buffer is smaller than the model');
  }
  const sum = f32
    ? new Float32Array(shared, 0, layout.totalElements)
    : new Float64Array(shared, 0, layout.totalElements);
  // One decode and one read buffer for all adds and the finish: no garbage per update.
  const scratch = new Float32Array(Math.min(chunkElements, Math.max(1, layout.totalElements)));
  const staging = new Uint8Array(Math.max(8, scratch.length * layout.maxElementSize));
  const tally: Tally = { count: options.count ?? 0, totalWeight: options.totalWeight ?? 0, bytesRead: 0 };
  // Set when an I/O error interrupts pass 2: the sum then holds part of an update and only a
  // rebuild (from the round's journal) can fix it, so every later call refuses.
  let corrupted: Error | undefined;
  const serial = serialCalls(() => corrupted);

  const addNow = async (path: string, weight: number, verified: boolean): Promise<AddOutcome> => {
    const refused = invalidWeight(weight);
    if (refused) return refused;
    const opened = await UpdateReader.open(path, layout, { staging });
    if (!opened.ok) return { ...opened, bytesRead: 0 };
    const reader = opened.reader;
    try {
      // Pass 1: the whole file must be finite before anything touches the sum.
      const scan = verified ? ({ ok: true } as const) : await reader.scanFinite();
      if (!scan.ok) {
        tally.bytesRead += reader.bytesRead;
        const { message, tensor } = scan;
        return { ok: false, code: 'non_finite', message, tensor, bytesRead: reader.bytesRead };
      }
      // Pass 2: convert chunk by chunk and accumulate.
      try {
        for (const [start, end] of chunkRanges(layout, chunkElements)) {
          await reader.read(start, end, scratch);
          weightedAccumulate(sum, start, scratch, end - start, weight);
        }
      } catch (err) {
        corrupted = new Error(`the sum holds part of ${path} after a failed read; rebuild it`, {
          cause: err,
        });
        throw err;
      }
      tally.bytesRead += reader.bytesRead;
      tally.count++;
      tally.totalWeight += weight;
      return { ok: true, count: tally.count, totalWeight: tally.totalWeight, bytesRead: reader.bytesRead };
    } finally {
      await reader.close();
    }
  };

  const finishNow = async (outPath: string, metadata?: Record<string, string>): Promise<FinishOutcome> => {
    const empty = nothingAdded(tally);
    if (empty) return empty;
    const { count, totalWeight } = tally;
    const out = await FlatOutput.create(outPath, layout, metadata);
    try {
      const inv = 1 / totalWeight;
      for (const [start, end] of chunkRanges(layout, chunkElements)) {
        const n = end - start;
        for (let i = 0; i < n; i++) scratch[i] = sum[start + i]! * inv;
        await out.write(start, scratch.subarray(0, n));
      }
      const { path, bytes, digest } = await out.close();
      return { ok: true, count, totalWeight, outPath: path, bytes, digest };
    } catch (err) {
      await out.abort();
      throw err;
    }
  };

  const accumulator = withTally<Omit<FedAvgAccumulator, keyof Tally>>(tally, {
    layout,
    sum,
    mu: options.mu,
    add: (path: string, weight: number, options?: AddOptions) =>
      serial(() => addNow(path, weight, options?.verified === true)),
    finish: (outPath: string, metadata?: Record<string, string>) =>
      serial(() => finishNow(outPath, metadata)),
  });
  return { ok: true, accumulator };
}
