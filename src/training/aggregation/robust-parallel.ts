/**
 * The robust strategies (median, trimmed mean, Krum, multi-Krum) on several threads: the same
 * results as the single-threaded reference (robust.ts), chunk by chunk, each chunk split among
 * `threads` threads (robust-slice.ts) that compute straight into a shared output buffer while
 * this thread writes the previous chunk (double buffering).
 *
 * Unlike the reference, median and trimmed mean make one pass, not two: NaN/Inf are checked in
 * the same read as the output is computed. Uploads were scanned on arrival, so a non-finite
 * input is rare; when one shows up, it is rejected and the output starts over without it (at
 * most once per input).
 *
 * Memory: per thread, N x (chunk / threads) float32 values and one read buffer; two output
 * chunks; Krum adds an N x N matrix per thread. With the default chunk (robustChunkElements)
 * that is about 32 MiB + 8 MiB whatever the model size.
 */
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../threads.js';
import { FlatOutput } from './flat-output.js';
import { chunkRanges, locate, sliceRanges, type FlatLayout } from './layout.js';
import { krumScores, krumSelect, trimCount } from './math.js';
import { robustChunkElements, type RobustSpec } from './robust.js';
import type { RobustChunkRequest, RobustChunkResult, RobustSliceSetup } from './robust-slice.js';
import type {
  AggregateInput,
  AggregateResult,
  AggregationFailure,
  ChunkOptions,
  RejectedInput,
} from './types.js';
import { UpdateReader } from './update-reader.js';
import type { RobustCall, WorkerReply } from './worker-protocol.js';

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
}

/** A pool of robust threads over the same updates. */
function startPool(setup: RobustSliceSetup, threads: number) {
  let nextId = 1;
  let broken: Error | undefined;
  const pool: Thread[] = Array.from({ length: threads }, () => {
    const worker = startThread(new URL('./aggregate.worker.js', import.meta.url), {
      workerData: { mode: 'robust', setup },
    });
    const t: Thread = { worker, pending: new Map() };
    worker.on('message', (reply: WorkerReply) => {
      const p = t.pending.get(reply.id);
      if (!p) return;
      t.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else p.reject(Object.assign(new Error(reply.error.message), { stack: reply.error.stack }));
    });
    const fail = (err: Error) => {
      broken ??= err;
      for (const p of t.pending.values()) p.reject(err);
      t.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`robust aggregation thread exited with code ${code}`)));
    return t;
  });
  const call = <T>(t: Thread, req: RobustCall): Promise<T> => {
    if (broken) return Promise.reject(broken);
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      t.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      t.worker.postMessage({ ...req, id });
    });
  };
  return {
    size: threads,
    /** Splits [start, end) among the threads; each writes its part at `outAt + (its start - start)`. */
    async chunk(
      req: Omit<RobustChunkRequest, 'start' | 'end' | 'outAt'>,
      start: number,
      end: number,
      outAt: number,
    ): Promise<RobustChunkResult> {
      const parts = sliceRanges(end - start, threads);
      const results = await Promise.all(
        pool.map((t, i) => {
          const [s, e] = parts[i]!;
          return s === e
            ? { bytesRead: 0, nonFinite: [] }
            : call<RobustChunkResult>(t, {
                op: 'chunk',
                ...req,
                start: start + s,
                end: start + e,
                outAt: outAt + s,
              });
        }),
      );
      return {
        bytesRead: results.reduce((sum, r) => sum + r.bytesRead, 0),
        nonFinite: results.flatMap((r) => r.nonFinite).sort((a, b) => a.flat - b.flat),
      };
    },
    /** Sum over the threads of their pairwise squared distances. */
    async distances(): Promise<Float64Array> {
      const all = await Promise.all(pool.map((t) => call<Float64Array>(t, { op: 'distances' })));
      const dist = new Float64Array(all[0]!.length);
      for (const d of all) for (let i = 0; i < d.length; i++) dist[i]! += d[i]!;
      return dist;
    },
    async close(): Promise<void> {
      broken ??= new Error('pool closed');
      await Promise.all(pool.map((t) => t.worker.terminate()));
    },
  };
}

type Pool = ReturnType<typeof startPool>;

/**
 * Runs a robust strategy on `threads` threads; same contract and results as runRobust
 * (Krum scores may differ in the last bits: the distances are summed in another order).
 */
export async function runRobustParallel(
  spec: RobustSpec & ChunkOptions,
  inputs: readonly AggregateInput[],
  layout: FlatLayout,
  outPath: string,
  threads: number,
  metadata?: Record<string, string>,
): Promise<Omit<AggregateResult, 'ms'> | AggregationFailure> {
  const chunkElements = Math.max(1, spec.chunkElements ?? robustChunkElements(inputs.length));
  const rejected: RejectedInput[] = [];
  // Header checks here, once; the threads open the files that pass.
  const good: number[] = [];
  for (const [index, input] of inputs.entries()) {
    const r = await UpdateReader.open(input.path, layout);
    if (r.ok) {
      await r.reader.close();
      good.push(index);
    } else
      rejected.push({
        index,
        code: r.code,
        message: r.message,
        ...(r.tensor === undefined ? {} : { tensor: r.tensor }),
      });
  }
  const width = Math.min(chunkElements, Math.max(1, layout.totalElements));
  const out = new SharedArrayBuffer(2 * width * 4);
  const setup: RobustSliceSetup = {
    header: layout.header,
    paths: good.map((i) => inputs[i]!.path),
    out,
    maxElements: Math.ceil(width / threads) + 16,
  };
  const pool = startPool(setup, Math.max(1, threads));
  let bytesRead = 0;
  // Members are indices into `good`.
  const reject = (member: number, flat: number) => {
    const { tensor, element } = locate(layout, flat);
    const name = layout.tensors[tensor]!.name;
    rejected.push({
      index: good[member]!,
      code: 'non_finite',
      message: `tensor "${name}" holds a non-finite value at element ${element}`,
      tensor: name,
    });
  };
  try {
    let members = good.map((_, i) => i);
    let scores: Record<number, number> | undefined;
    if (spec.strategy === 'krum' || spec.strategy === 'multi_krum') {
      for (const [start, end] of chunkRanges(layout, chunkElements)) {
        const r = await pool.chunk({ kind: 'distances', members, trim: 0 }, start, end, 0);
        bytesRead += r.bytesRead;
        for (const { member, flat } of firstPerMember(r.nonFinite)) reject(member, flat);
        members = members.filter((m) => !r.nonFinite.some((x) => x.member === m));
      }
      const f = spec.params.f;
      const m = spec.strategy === 'multi_krum' ? spec.params.m : 1;
      if (members.length < 2 * f + 3 || m > members.length - f) {
        const message = `Krum with f=${f}, m=${m} needs n >= max(2f+3, m+f) usable updates; ${members.length} left`;
        return { ok: false, code: 'too_few_inputs', message, rejected: sortRejected(rejected) };
      }
      const s = krumScores(await pool.distances(), good.length, members, f);
      scores = Object.fromEntries(members.map((i, k) => [good[i]!, s[k]!]));
      members = krumSelect(members, s, m);
    }
    for (;;) {
      const n = members.length;
      const trim = spec.strategy === 'trimmed_mean' ? trimCount(n, spec.params) : 0;
      if (n === 0 || 2 * trim >= n) {
        const message = `${spec.strategy} needs more than ${2 * trim} usable updates; ${n} left`;
        return { ok: false, code: 'too_few_inputs', message, rejected: sortRejected(rejected) };
      }
      const kind =
        spec.strategy === 'median' ? 'median' : spec.strategy === 'trimmed_mean' ? 'trimmed_mean' : 'mean';
      const pass = await outputPass(pool, layout, outPath, metadata, chunkElements, width, out, {
        kind,
        members,
        trim,
      });
      bytesRead += pass.bytesRead;
      if (pass.ok) {
        return {
          ok: true,
          outPath: pass.written.path,
          digest: pass.written.digest,
          bytesRead,
          used: members.map((i) => good[i]!),
          rejected: sortRejected(rejected),
          ...(scores === undefined ? {} : { scores }),
        };
      }
      // A NaN/Inf found on the way: drop that update and start the output over.
      for (const { member, flat } of firstPerMember(pass.nonFinite)) reject(member, flat);
      members = members.filter((m) => !pass.nonFinite.some((x) => x.member === m));
    }
  } finally {
    await pool.close();
  }
}

async function outputPass(
  pool: Pool,
  layout: FlatLayout,
  outPath: string,
  metadata: Record<string, string> | undefined,
  chunkElements: number,
  width: number,
  out: SharedArrayBuffer,
  req: Omit<RobustChunkRequest, 'start' | 'end' | 'outAt'>,
): Promise<
  | { ok: true; written: { path: string; digest: string }; bytesRead: number }
  | { ok: false; nonFinite: RobustChunkResult['nonFinite']; bytesRead: number }
> {
  const values = new Float32Array(out);
  const file = await FlatOutput.create(outPath, layout, metadata);
  let bytesRead = 0;
  let writing: Promise<void> = Promise.resolve();
  try {
    let slot = 0;
    for (const [start, end] of chunkRanges(layout, chunkElements)) {
      const at = slot * width;
      const r = await pool.chunk(req, start, end, at);
      bytesRead += r.bytesRead;
      await writing;
      if (r.nonFinite.length > 0) {
        await file.abort();
        return { ok: false, nonFinite: r.nonFinite, bytesRead };
      }
      // The threads fill the other slot while this one is written.
      writing = file.write(start, values.subarray(at, at + end - start));
      slot ^= 1;
    }
    await writing;
    return { ok: true, written: await file.close(), bytesRead };
  } catch (err) {
    await writing.catch(() => undefined);
    await file.abort();
    throw err;
  }
}

function firstPerMember(found: RobustChunkResult['nonFinite']): RobustChunkResult['nonFinite'] {
  const seen = new Set<number>();
  return found.filter((x) => !seen.has(x.member) && seen.add(x.member));
}

function sortRejected(r: RejectedInput[]): RejectedInput[] {
  return [...r].sort((a, b) => a.index - b.index);
}
