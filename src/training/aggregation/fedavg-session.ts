/**
 * Parallel, incremental FedAvg: a running weighted sum of updates, added as they arrive by
 * `threads` worker threads, each owning a disjoint slice of the model (fedavg-slice.ts). The sum
 * lives in one shared WebAssembly memory (a SharedArrayBuffer past 4 GiB) that every thread and
 * the caller see; each update is read once per pass, in large reads, decoded from F32/F16/BF16
 * and added in the same pass. Memory: the sum (one model of float32, or two of float64) plus one
 * read buffer per thread, whatever the number of updates.
 *
 * The results are bit-identical to the single-threaded reference (fedavg.ts): each element is
 * added by one thread, in the order of the adds, with the same float64 arithmetic. The finish
 * writes the mean from every thread too, each its part of the file (parallel-output.ts).
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../threads.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { AccumulatorOptions, AddOptions, AddOutcome, FinishOutcome } from './fedavg.js';
import type { SliceOutcome, SliceSetup } from './fedavg-slice.js';
import { flatLayout, sliceRanges, type LayoutFailure } from './layout.js';
import { writeInParts, type PartDigests } from './parallel-output.js';
import { allocateSum, sumView } from './simd/kernels.js';
import { invalidWeight, nothingAdded, serialCalls, withTally, type Tally } from './sum-state.js';
import type { SliceCall, SliceRequest, WorkerReply } from './worker-protocol.js';

/**
 * Elements per read in a parallel session: 256 Ki (1 MiB of float32). Reads this large cost
 * little per byte (a system call per MiB), and the buffer, one per thread whatever the number of
 * updates, stays in the second-level cache between the read and the add; larger ones only add
 * to the memory beyond the sum.
 */
export const DEFAULT_SESSION_CHUNK_ELEMENTS = 1 << 18;

/** Below this many elements per thread, more threads cost more than they save (by default). */
const MIN_ELEMENTS_PER_THREAD = 1 << 16;

/** Options of {@link createFedAvgSession}. */
export interface SessionOptions extends AccumulatorOptions {
  /**
   * Worker threads, each adding its own slice of the model. Default: the machine's available
   * parallelism, fewer for small models (at least 64 Ki elements per thread), at least 1.
   */
  threads?: number;
}

/** What a session's finish reports. */
export type SessionFinishOutcome =
  | (Extract<FinishOutcome, { ok: true }> & { bytesRead: number; ms: number })
  | Extract<FinishOutcome, { ok: false }>;

/** An incremental FedAvg/FedProx aggregation whose adds run in worker threads. */
export interface FedAvgSession {
  /** The running weighted sum (flat order, float64 unless options.precision says float32), shared with the threads: read, do not write. */
  readonly sum: Float64Array | Float32Array;
  /** Accepted updates and their total weight so far. */
  readonly count: number;
  readonly totalWeight: number;
  /** Body bytes read by all adds so far (every thread and pass). */
  readonly bytesRead: number;
  /** Number of worker threads. */
  readonly threads: number;
  /** FedProx mu when given. */
  readonly mu: number | undefined;
  /**
   * Adds one stored update; resolves when it is in the sum or rejected (sum untouched). Without
   * `verified`, every thread first scans its slice for NaN/Inf, and the add happens only when
   * all found none.
   */
  add(path: string, weight: number, options?: AddOptions): Promise<AddOutcome>;
  /**
   * Resolves once every thread has loaded its code and compiled its kernels (adds wait for that
   * by themselves; a benchmark waits here to leave the start-up out). Never resolves for a
   * thread that failed to start: its error rejects the calls instead.
   */
  ready(): Promise<void>;
  /** Writes the weighted mean with the global dtypes; the session stays usable. */
  finish(outPath: string, metadata?: Record<string, string>): Promise<SessionFinishOutcome>;
  /** Stops the threads; pending calls reject. */
  close(): Promise<void>;
}

/** The default number of threads for `elements` parameters. */
export function defaultThreads(elements: number): number {
  return Math.max(1, Math.min(availableParallelism(), Math.floor(elements / MIN_ELEMENTS_PER_THREAD)));
}

interface Thread {
  worker: Worker;
  online: Promise<unknown>;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
}

function toError(e: { message: string; stack?: string }): Error {
  const err = new Error(e.message);
  if (e.stack) err.stack = e.stack;
  return err;
}

/**
 * Starts a FedAvg session for updates shaped like `header`. `options.sum` (with `totalWeight`
 * and `count`) resumes from an existing sum, e.g. one rebuilt from the round's journal: it is
 * copied into the session's shared memory. If a thread crashes or a read fails mid-add, the sum
 * holds part of that update and every later call rejects: rebuild it from the journal.
 */
export function createFedAvgSession(
  header: SafetensorsHeader,
  options: SessionOptions = {},
): { ok: true; session: FedAvgSession } | LayoutFailure {
  const built = flatLayout(header);
  if (!built.ok) return built;
  const layout = built.layout;
  const precision = options.precision ?? 'float64';
  const elements = layout.totalElements;
  const threads = Math.max(1, Math.floor(options.threads ?? defaultThreads(elements)));
  const perRead = Math.max(1, options.chunkElements ?? DEFAULT_SESSION_CHUNK_ELEMENTS);
  // Rounded up to 64 bytes so every thread's buffer starts aligned for the vector loads.
  const stagingBytes =
    Math.ceil((Math.min(perRead, Math.max(1, elements)) * layout.maxElementSize) / 64) * 64;
  const store = allocateSum(elements, precision, threads, stagingBytes);
  const sum = sumView(store, elements, precision);
  if (options.sum) {
    const given = precision === 'float64' ? new Float64Array(options.sum) : new Float32Array(options.sum);
    if (given.length < elements) throw new RangeError('sum buffer is smaller than the model');
    sum.set(given.subarray(0, elements));
  }
  let broken: Error | undefined;
  const failAll = (err: Error): void => {
    broken ??= err;
    for (const t of pool) for (const p of t.pending.values()) p.reject(err);
    for (const t of pool) t.pending.clear();
  };
  const pool: Thread[] = sliceRanges(elements, threads).map(([start, end], thread) => {
    const setup: SliceSetup = { header, store, precision, thread, start, end, stagingBytes };
    const worker = startThread(new URL('./aggregate.worker.js', import.meta.url), {
      workerData: { mode: 'slice', setup },
      // A slice thread allocates little (its buffers live in the shared memory): a small young
      // generation keeps its garbage, and so the process's RSS, small.
      resourceLimits: { maxYoungGenerationSizeMb: 4 },
    });
    let started: () => void = () => undefined;
    const t: Thread = { worker, pending: new Map(), online: new Promise<void>((r) => (started = r)) };
    worker.on('message', (reply: WorkerReply) => {
      if (reply.id === 0) return started();
      const p = t.pending.get(reply.id);
      if (!p) return;
      t.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else p.reject(toError(reply.error));
    });
    worker.on('error', (err) => failAll(err));
    worker.on('exit', (code) => failAll(new Error(`aggregation thread exited with code ${code}`)));
    return t;
  });
  let nextId = 1;
  const call = <T>(t: Thread, req: SliceCall): Promise<T> => {
    if (broken) return Promise.reject(broken);
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      t.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      t.worker.postMessage({ ...req, id } satisfies SliceRequest);
    });
  };
  const everyThread = (req: SliceCall): Promise<SliceOutcome[]> =>
    Promise.all(pool.map((t) => call<SliceOutcome>(t, req)));

  const tally: Tally = { count: options.count ?? 0, totalWeight: options.totalWeight ?? 0, bytesRead: 0 };
  // One call at a time: every thread must see the adds in the same order, and a scan must end
  // everywhere before the add it guards starts anywhere.
  const serial = serialCalls(() => broken);
  const read = (outcomes: SliceOutcome[]): number => {
    const n = outcomes.reduce((s, o) => s + o.bytesRead, 0);
    tally.bytesRead += n;
    return n;
  };

  const addNow = async (path: string, weight: number, verified: boolean): Promise<AddOutcome> => {
    const refused = invalidWeight(weight);
    if (refused) return refused;
    let scanned = 0;
    if (!verified) {
      const scans = await everyThread({ op: 'scan', path });
      scanned = read(scans);
      // The first NaN/Inf in flat order, as a single thread scanning the whole model would name it.
      const bad = scans
        .filter((s): s is Extract<SliceOutcome, { ok: false }> => !s.ok)
        .sort((a, b) => (a.flat ?? -1) - (b.flat ?? -1))[0];
      if (bad) {
        const { code, message, tensor } = bad;
        return { ok: false, code, message, ...(tensor === undefined ? {} : { tensor }), bytesRead: scanned };
      }
    }
    const adds = await everyThread({ op: 'add', path, weight });
    const added = read(adds) + scanned;
    const failed = adds.find((a): a is Extract<SliceOutcome, { ok: false }> => !a.ok);
    if (failed) {
      // A header refused by every thread left the sum untouched; a file that changed between
      // threads' reads did not.
      if (adds.some((a) => a.ok)) broken = new Error(`the sum holds part of ${path}; rebuild it`);
      const { code, message, tensor } = failed;
      return { ok: false, code, message, ...(tensor === undefined ? {} : { tensor }), bytesRead: added };
    }
    tally.count++;
    tally.totalWeight += weight;
    return { ok: true, count: tally.count, totalWeight: tally.totalWeight, bytesRead: added };
  };

  const finishNow = async (
    outPath: string,
    metadata?: Record<string, string>,
  ): Promise<SessionFinishOutcome> => {
    const empty = nothingAdded(tally);
    if (empty) return empty;
    const { count, totalWeight, bytesRead } = tally;
    const t0 = performance.now();
    // Every thread converts, hashes and writes a part of the output at its offset.
    const w = await writeInParts(outPath, layout, metadata, pool.length, (tmpPath, out, parts) =>
      Promise.all(
        parts.map((part, i) =>
          call<PartDigests>(pool[i]!, { op: 'finishPart', tmpPath, out, part, totalWeight }),
        ),
      ),
    );
    const ms = performance.now() - t0;
    return { ok: true, count, totalWeight, outPath: w.path, bytes: w.bytes, digest: w.digest, bytesRead, ms };
  };

  const session = withTally<Omit<FedAvgSession, keyof Tally>>(tally, {
    sum,
    threads,
    mu: options.mu,
    async ready() {
      await Promise.all(pool.map((t) => t.online));
    },
    add: (path: string, weight: number, addOptions?: AddOptions) =>
      serial(() => addNow(path, weight, addOptions?.verified === true)),
    finish: (outPath: string, metadata?: Record<string, string>) =>
      serial(() => finishNow(outPath, metadata)),
    async close() {
      broken ??= new Error('session closed');
      await Promise.all(pool.map((t) => t.worker.terminate()));
    },
  });

  return { ok: true, session };
}
