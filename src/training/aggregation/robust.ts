/**
 * Robust strategies over stored updates: coordinate-wise median, trimmed mean, Krum and
 * multi-Krum. Chunk k of every update is read at once, so memory is N x chunk, not N x model.
 * These are unweighted by design: a weight (sample count) is the client's own claim, and the
 * point of these strategies is to not trust any single client's claims.
 */
import { FlatOutput } from './flat-output.js';
import { chunkRanges, type FlatLayout } from './layout.js';
import {
  accumulatePairwiseSquared,
  krumScores,
  krumSelect,
  meanChunk,
  medianChunk,
  trimCount,
  trimmedMeanChunk,
} from './math.js';
import { UpdateReader, firstNonFiniteValue } from './update-reader.js';
import type {
  AggregateInput,
  AggregateResult,
  AggregationFailure,
  ChunkOptions,
  RejectedInput,
  StrategySpec,
} from './types.js';

/** Memory budget of one robust chunk over all updates (read buffer + float32 values). */
const ROBUST_BUDGET_BYTES = 64 * 1024 * 1024;

/** Robust strategy specs. */
export type RobustSpec = Extract<
  StrategySpec,
  { strategy: 'median' | 'trimmed_mean' | 'krum' | 'multi_krum' }
>;

/** Default elements per chunk for N robust inputs: N x chunk within 64 MiB, between 16 Ki and 1 Mi. */
export function robustChunkElements(n: number): number {
  return Math.max(1 << 14, Math.min(1 << 20, Math.floor(ROBUST_BUDGET_BYTES / (Math.max(1, n) * 8))));
}

interface Open {
  index: number;
  reader: UpdateReader;
  values: Float32Array;
}

/**
 * Runs a robust strategy. Inputs with a bad header, a mismatch or any NaN/Inf are left out and
 * reported; the strategy then needs enough inputs left (Krum: n >= 2f + 3; trimmed mean: n > 2 trim).
 */
export async function runRobust(
  spec: RobustSpec & ChunkOptions,
  inputs: readonly AggregateInput[],
  layout: FlatLayout,
  outPath: string,
  metadata?: Record<string, string>,
): Promise<Omit<AggregateResult, 'ms'> | AggregationFailure> {
  const chunkElements = Math.max(1, spec.chunkElements ?? robustChunkElements(inputs.length));
  const rejected: RejectedInput[] = [];
  const open: Open[] = [];
  const width = Math.min(chunkElements, Math.max(1, layout.totalElements));
  try {
    for (const [index, input] of inputs.entries()) {
      // Each reader owns one chunk-sized read buffer (also used by its finiteness scan).
      const staging = new Uint8Array(Math.max(8, width * layout.maxElementSize));
      const r = await UpdateReader.open(input.path, layout, { staging });
      if (r.ok) open.push({ index, reader: r.reader, values: new Float32Array(width) });
      else
        rejected.push(
          r.tensor === undefined
            ? { index, code: r.code, message: r.message }
            : { index, code: r.code, message: r.message, tensor: r.tensor },
        );
    }
    let candidates = open;
    let scores: Record<number, number> | undefined;
    if (spec.strategy === 'krum' || spec.strategy === 'multi_krum') {
      // Pass 1: pairwise squared distances, chunk by chunk, checking finiteness on the way.
      const n = open.length;
      const dist = new Float64Array(n * n);
      const bad = new Array<boolean>(n).fill(false);
      for (const [start, end] of chunkRanges(layout, chunkElements)) {
        await Promise.all(open.map((o, i) => (bad[i] ? undefined : o.reader.read(start, end, o.values))));
        open.forEach((o, i) => {
          const at = bad[i] ? -1 : firstNonFiniteValue(o.values, end - start);
          if (at >= 0) {
            bad[i] = true;
            rejected.push(nonFinite(o.index, layout, start + at));
          }
        });
        accumulatePairwiseSquared(
          open.map((o) => o.values),
          end - start,
          dist,
          bad,
        );
      }
      const f = spec.params.f;
      const m = spec.strategy === 'multi_krum' ? spec.params.m : 1;
      const good = open.map((_, i) => i).filter((i) => !bad[i]);
      if (good.length < 2 * f + 3 || m > good.length - f) {
        const message = `Krum with f=${f}, m=${m} needs n >= max(2f+3, m+f) usable updates; ${good.length} left`;
        return { ok: false, code: 'too_few_inputs', message, rejected: sortRejected(rejected) };
      }
      const s = krumScores(dist, n, good, f);
      scores = Object.fromEntries(good.map((i, k) => [open[i]!.index, s[k]!]));
      candidates = krumSelect(good, s, m).map((i) => open[i]!);
    } else {
      // Median and trimmed mean cannot take an update back once a chunk is written: check first.
      const scans = await Promise.all(open.map((o) => o.reader.scanFinite()));
      candidates = open.filter((o, i) => {
        const s = scans[i]!;
        if (!s.ok)
          rejected.push({ index: o.index, code: 'non_finite', message: s.message, tensor: s.tensor });
        return s.ok;
      });
      const n = candidates.length;
      const trim = spec.strategy === 'trimmed_mean' ? trimCount(n, spec.params) : 0;
      if (n === 0 || 2 * trim >= n) {
        const message = `${spec.strategy} needs more than ${2 * trim} usable updates; ${n} left`;
        return { ok: false, code: 'too_few_inputs', message, rejected: sortRejected(rejected) };
      }
    }
    // Output pass.
    const out = await FlatOutput.create(outPath, layout, metadata);
    try {
      const result = new Float32Array(width);
      const n = candidates.length;
      const trim = spec.strategy === 'trimmed_mean' ? trimCount(n, spec.params) : 0;
      for (const [start, end] of chunkRanges(layout, chunkElements)) {
        await Promise.all(candidates.map((o) => o.reader.read(start, end, o.values)));
        const cols = candidates.map((o) => o.values);
        const count = end - start;
        if (spec.strategy === 'median') medianChunk(cols, count, result);
        else if (spec.strategy === 'trimmed_mean') trimmedMeanChunk(cols, count, trim, result);
        else meanChunk(cols, count, result);
        await out.write(start, result.subarray(0, count));
      }
      const written = await out.close();
      const bytesRead = open.reduce((s, o) => s + o.reader.bytesRead, 0);
      return {
        ok: true,
        outPath: written.path,
        digest: written.digest,
        bytesRead,
        used: candidates.map((o) => o.index),
        rejected: sortRejected(rejected),
        ...(scores === undefined ? {} : { scores }),
      };
    } catch (err) {
      await out.abort();
      throw err;
    }
  } finally {
    await Promise.all(open.map((o) => o.reader.close()));
  }
}

function nonFinite(index: number, layout: FlatLayout, flat: number): RejectedInput {
  let g = 0;
  while (layout.flatStart[g + 1]! <= flat) g++;
  const t = layout.tensors[g]!;
  const element = flat - layout.flatStart[g]!;
  return {
    index,
    code: 'non_finite',
    message: `tensor "${t.name}" holds a non-finite value at element ${element}`,
    tensor: t.name,
  };
}

function sortRejected(r: RejectedInput[]): RejectedInput[] {
  return [...r].sort((a, b) => a.index - b.index);
}
