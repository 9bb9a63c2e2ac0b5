/**
 * Runs aggregation off the event loop, in worker threads: one-shot jobs with {@link aggregate},
 * and an incremental FedAvg session with {@link createFedAvgSession} whose adds run in its
 * worker as updates arrive.
 *
 * The worker script is found by startThread (src/threads.ts), from dist/ or from sources.
 */
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../threads.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { AccumulatorOptions, AddOptions, AddOutcome, FinishOutcome } from './fedavg.js';
import { flatLayout, type LayoutFailure } from './layout.js';
import type { AggregateJob, AggregateOutcome } from './types.js';
import type { SessionCall, SessionRequest, WorkerData, WorkerReply } from './worker-protocol.js';

function startWorker(data: WorkerData): Worker {
  return startThread(new URL('./aggregate.worker.js', import.meta.url), { workerData: data });
}

function toError(e: { message: string; stack?: string }): Error {
  const err = new Error(e.message);
  if (e.stack) err.stack = e.stack;
  return err;
}

/**
 * Runs one aggregation in a fresh worker thread and resolves with its outcome
 * (`{ ok: true, outPath, digest, bytesRead, ms, used, rejected }` or a failure value).
 * Rejects only on unexpected errors (I/O, a crashed worker).
 */
export function aggregate(job: AggregateJob): Promise<AggregateOutcome> {
  return new Promise((resolve, reject) => {
    const worker = startWorker({ mode: 'job', job });
    let settled = false;
    worker.once('message', (reply: WorkerReply) => {
      settled = true;
      if (reply.ok) resolve(reply.value as AggregateOutcome);
      else reject(toError(reply.error));
      void worker.terminate();
    });
    worker.once('error', (err) => {
      if (!settled) reject(err);
      settled = true;
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`aggregation worker exited with code ${code}`));
      settled = true;
    });
  });
}

/** What a session's finish reports. */
export type SessionFinishOutcome =
  | (Extract<FinishOutcome, { ok: true }> & { bytesRead: number; ms: number })
  | Extract<FinishOutcome, { ok: false }>;

/** An incremental FedAvg/FedProx aggregation whose adds run in a worker thread. */
export interface FedAvgSession {
  /** The running weighted sum (flat order, float64 unless options.precision says float32), shared with the worker: read, do not write. */
  readonly sum: Float64Array | Float32Array;
  /** Accepted updates and their total weight so far. */
  readonly count: number;
  readonly totalWeight: number;
  /** FedProx mu when given. */
  readonly mu: number | undefined;
  /** Adds one stored update; resolves when it is in the sum or rejected (sum untouched). */
  add(path: string, weight: number, options?: AddOptions): Promise<AddOutcome>;
  /** Writes the weighted mean with the global dtypes; the session stays usable. */
  finish(outPath: string, metadata?: Record<string, string>): Promise<SessionFinishOutcome>;
  /** Stops the worker; pending calls reject. */
  close(): Promise<void>;
}

/**
 * Starts a FedAvg session for updates shaped like `header`. `options.sum` (with `totalWeight`
 * and `count`) resumes from an existing sum, e.g. one rebuilt from the round's journal.
 * If the worker crashes mid-add the sum may hold part of that update: rebuild it from the journal.
 */
export function createFedAvgSession(
  header: SafetensorsHeader,
  options: AccumulatorOptions = {},
): { ok: true; session: FedAvgSession } | LayoutFailure {
  const built = flatLayout(header);
  if (!built.ok) return built;
  const f32 = options.precision === 'float32';
  const sumBuffer = options.sum ?? new SharedArrayBuffer(built.layout.totalElements * (f32 ? 4 : 8));
  const sum = f32
    ? new Float32Array(sumBuffer, 0, built.layout.totalElements)
    : new Float64Array(sumBuffer, 0, built.layout.totalElements);
  const worker = startWorker({ mode: 'session', header, options: { ...options, sum: sumBuffer } });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let broken: Error | undefined;
  let count = options.count ?? 0;
  let totalWeight = options.totalWeight ?? 0;

  const failAll = (err: Error): void => {
    broken ??= err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (reply: WorkerReply) => {
    const p = pending.get(reply.id);
    if (!p) return;
    pending.delete(reply.id);
    if (reply.ok) p.resolve(reply.value);
    else p.reject(toError(reply.error));
  });
  worker.on('error', (err) => failAll(err));
  worker.on('exit', (code) => failAll(new Error(`aggregation session worker exited with code ${code}`)));

  const call = <T>(req: SessionCall): Promise<T> => {
    if (broken) return Promise.reject(broken);
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ ...req, id } satisfies SessionRequest);
    });
  };

  const session: FedAvgSession = {
    sum,
    get count() {
      return count;
    },
    get totalWeight() {
      return totalWeight;
    },
    mu: options.mu,
    async add(path, weight, options) {
      const verified = options?.verified === true;
      const r = await call<AddOutcome>({ op: 'add', path, weight, ...(verified ? { verified } : {}) });
      if (r.ok) ({ count, totalWeight } = r);
      return r;
    },
    finish: (outPath, metadata) =>
      call<SessionFinishOutcome>(
        metadata === undefined ? { op: 'finish', outPath } : { op: 'finish', outPath, metadata },
      ),
    async close() {
      broken ??= new Error('session closed');
      await worker.terminate();
    },
  };
  return { ok: true, session };
}
