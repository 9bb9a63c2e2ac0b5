/**
 * One thread of a parallel robust aggregation (robust-parallel.ts): for each chunk it is given a
 * sub-range of, it reads that range of every member update (blocking reads, decoded to float32),
 * checks it for NaN/Inf, and writes the coordinate-wise median, trimmed mean or mean into the
 * shared output buffer, or adds the range's share of every pairwise squared distance (Krum).
 * Memory: members x sub-range float32 values, one read buffer, and for Krum an N x N matrix.
 */
import { decodeToF32 } from '../safetensors/read.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { flatLayout } from './layout.js';
import { accumulatePairwiseSquared, meanChunk, medianChunk, trimmedMeanChunk } from './math.js';
import { UpdateReader, firstNonFiniteValue } from './update-reader.js';

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
  const cols = readers.map(() => new Float32Array(width));
  const staging = new Uint8Array(width * layout.maxElementSize);
  const out = new Float32Array(setup.out);
  const dist = new Float64Array(n * n);
  const skip = new Array<boolean>(n).fill(true);

  return {
    chunk(req) {
      const count = req.end - req.start;
      const nonFinite: { member: number; flat: number }[] = [];
      let bytesRead = 0;
      for (const m of req.members) {
        const col = cols[m]!;
        bytesRead += readers[m]!.readPiecesSync(req.start, req.end, staging, (dtype, offset, pieces) => {
          const size = dtype === 'F32' ? 4 : 2;
          decodeToF32(staging.subarray(0, pieces * size), dtype, col, offset);
        });
        const at = firstNonFiniteValue(col, count);
        if (at >= 0) nonFinite.push({ member: m, flat: req.start + at });
      }
      // A member with a NaN/Inf spoils this chunk's result: the coordinator drops it and redoes.
      if (nonFinite.length > 0 && req.kind !== 'distances') return { bytesRead, nonFinite };
      const members = req.members.map((m) => cols[m]!);
      const result = out.subarray(req.outAt, req.outAt + count);
      if (req.kind === 'median') medianChunk(members, count, result);
      else if (req.kind === 'trimmed_mean') trimmedMeanChunk(members, count, req.trim, result);
      else if (req.kind === 'mean') meanChunk(members, count, result);
      else {
        skip.fill(true);
        for (const m of req.members) skip[m] = false;
        accumulatePairwiseSquared(cols, count, dist, skip);
      }
      return { bytesRead, nonFinite };
    },
    distances: () => dist,
    async close() {
      await Promise.all(readers.map((r) => r.close()));
    },
  };
}
