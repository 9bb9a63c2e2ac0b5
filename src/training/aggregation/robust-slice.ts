/**
 * One thread of a parallel robust aggregation (robust-parallel.ts): for each chunk it is given a
 * sub-range of, it reads that range of every member update (blocking reads, decoded to float32),
 * checks it for NaN/Inf, and writes the coordinate-wise median, trimmed mean or mean into the
 * shared output buffer, or adds the range's share of every pairwise squared distance (Krum).
 * The values live in one WebAssembly memory of the thread's, a float32 column per update, where
 * the SIMD kernels (simd/robust-kernels.ts, simd/kernels.ts) decode, scan and compute.
 * Memory: members x sub-range float32 values, one read buffer, one result column, and for Krum
 * an N x N matrix.
 */
import type { AggregatableDtype } from '../safetensors/dtypes.js';
import { createFiniteScanner } from '../safetensors/finite-scan.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { decodeToF32 } from '../safetensors/read.js';
import { flatLayout } from './layout.js';
import { fedAvgModule } from './simd/kernels.js';
import { createRobustKernels, robustScratchBytes } from './simd/robust-kernels.js';
import { UpdateReader } from './update-reader.js';

/** What a robust thread is started with. */
export interface RobustSliceSetup {
  header: SafetensorsHeader;
  /** The updates, already validated by the coordinating thread. */
  paths: string[];
  /** Output chunks, float32, written at the offsets the requests name. */
  out: SharedArrayBuffer;
  /** Largest sub-range a request will name (elements). */
  maxElements: number;
}

/** A chunk request: what to compute over [start, end) of the flat space from `members`. */
export interface RobustChunkRequest {
  kind: 'median' | 'trimmed_mean' | 'mean' | 'distances';
  /** Indices into `paths`. */
  members: number[];
  trim: number;
  start: number;
  end: number;
  /** Where the result of element `start` goes in the output buffer (elements). */
  outAt: number;
}

/** What a chunk request found: the bytes it read, and the members holding a NaN/Inf (first flat index). */
export interface RobustChunkResult {
  bytesRead: number;
  nonFinite: { member: number; flat: number }[];
}

/** A robust thread: chunk computations and, for Krum, the distances it has summed. */
export interface RobustSlice {
  chunk(req: RobustChunkRequest): RobustChunkResult;
  /** The upper triangle of pairwise squared distances summed over every `distances` request (N x N). */
  distances(): Float64Array;
  close(): Promise<void>;
}

/** Opens every update of `setup` (they were validated already: a failure here is unexpected). */
export async function openRobustSlice(setup: RobustSliceSetup): Promise<RobustSlice> {
  const built = flatLayout(setup.header);
  if (!built.ok) throw new Error(built.message);
  const layout = built.layout;
  const readers: UpdateReader[] = [];
  try {
    for (const path of setup.paths) {
      const r = await UpdateReader.open(path, layout);
      if (!r.ok) throw new Error(`${path}: ${r.message}`);
      readers.push(r.reader);
    }
  } catch (err) {
    await Promise.all(readers.map((r) => r.close()));
    throw err;
  }
  const n = readers.length;
  const width = Math.max(1, setup.maxElements);
  // Memory: n columns, the read buffer, the result column, the kernels' scratch; 64-byte aligned.
  const columnBytes = align(width * 4);
  const stagingAt = n * columnBytes;
  const resultAt = stagingAt + align(width * layout.maxElementSize);
  const scratchAt = resultAt + columnBytes;
  const bytes = scratchAt + robustScratchBytes(n);
  const pages = Math.ceil(bytes / 65536);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  const heap = memory.buffer;
  const staging = new Uint8Array(heap, stagingAt, resultAt - stagingAt);
  const decode = new WebAssembly.Instance(fedAvgModule(), { env: { mem: memory } })
    .exports as unknown as Record<'f16' | 'bf16', (src: number, dst: number, n: number) => void>;
  const kernels = createRobustKernels(memory, scratchAt, n);
  const scanner = createFiniteScanner(memory);
  const column = (m: number) => m * columnBytes;
  /**
   * Where a piece of update m is read: F32 values straight into its column (a copy within a
   * shared memory is slow), 16-bit ones into the read buffer, to be decoded by toColumn.
   */
  const readInto = (m: number) => (dtype: AggregatableDtype, offset: number, count: number) =>
    dtype === 'F32' ? new Uint8Array(heap, column(m) + offset * 4, count * 4) : staging;
  /** Decodes `count` 16-bit elements of the read buffer into column m from element `offset`. */
  const toColumn = (m: number, dtype: AggregatableDtype, offset: number, count: number) => {
    if (dtype === 'F32') return;
    const dst = column(m) + offset * 4;
    const vectorised = count & ~3;
    (dtype === 'F16' ? decode.f16 : decode.bf16)(stagingAt, dst, vectorised);
    if (vectorised < count)
      decodeToF32(
        staging.subarray(vectorised * 2, count * 2),
        dtype,
        new Float32Array(heap, column(m), width),
        offset + vectorised,
      );
  };
  const out = new Float32Array(setup.out);
  const dist = new Float64Array(n * n);

  return {
    chunk(req) {
      const count = req.end - req.start;
      const nonFinite: { member: number; flat: number }[] = [];
      let bytesRead = 0;
      for (const m of req.members) {
        bytesRead += readers[m]!.readPiecesSync(req.start, req.end, readInto(m), (dtype, offset, pieces) =>
          toColumn(m, dtype, offset, pieces),
        );
      }
      const scan = () => {
        for (const m of req.members) {
          const at = scanner.firstNonFinite(column(m), count * 4, 'F32');
          if (at >= 0) nonFinite.push({ member: m, flat: req.start + at });
        }
      };
      const cols = req.members.map(column);
      if (req.kind === 'distances') {
        // A distance is finite exactly when both columns are (a squared float32 difference
        // cannot overflow float64): the columns are scanned only when one is not, or when a
        // lone member has no distance to tell.
        const pairs = (members: number[]) =>
          members.flatMap((i, k) => members.slice(k + 1).map((j) => [i, j] as const));
        let members = [...req.members].sort((a, b) => a - b);
        let found = pairs(members).map(([i, j]) => kernels.squaredDistance(column(i), column(j), count));
        if (members.length < 2 || !found.every(Number.isFinite)) {
          scan();
          const bad = new Set(nonFinite.map((x) => x.member));
          members = members.filter((m) => !bad.has(m));
          found = pairs(members).map(([i, j]) => kernels.squaredDistance(column(i), column(j), count));
        }
        for (const [k, [i, j]] of pairs(members).entries()) dist[i * n + j]! += found[k]!;
        return { bytesRead, nonFinite };
      }
      // Median and trimmed mean see on the way whether every value was finite; only when one was
      // not (or they could not tell) are the columns scanned to name the member and the element.
      const seenFinite =
        req.kind === 'median'
          ? kernels.median(cols, count, resultAt)
          : kernels.trimmedMean(cols, count, req.kind === 'trimmed_mean' ? req.trim : 0, resultAt);
      if (!seenFinite) scan();
      // A member with a NaN/Inf spoils this chunk's result: the coordinator drops it and redoes.
      if (nonFinite.length > 0) return { bytesRead, nonFinite };
      out.set(new Float32Array(heap, resultAt, count), req.outAt);
      return { bytesRead, nonFinite };
    },
    distances: () => dist,
    async close() {
      await Promise.all(readers.map((r) => r.close()));
    },
  };
}

const align = (bytes: number) => Math.ceil(bytes / 64) * 64;
