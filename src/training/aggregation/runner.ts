/**
 * Runs aggregation off the event loop, in worker threads: one-shot jobs with {@link aggregate},
 * and an incremental FedAvg session with {@link createFedAvgSession} (fedavg-session.ts) whose
 * threads add each update as it arrives.
 *
 * The worker script is found by startThread (src/threads.ts), from dist/ or from sources.
 */
import { performance } from 'node:perf_hooks';
import { startThread } from '../../threads.js';
import { addAllAndFinish, validateParams } from './aggregate-job.js';
import { createFedAvgSession } from './fedavg-session.js';
import type { AggregateJob, AggregateOutcome } from './types.js';
import type { WorkerReply } from './worker-protocol.js';

export {
  createFedAvgSession,
  defaultThreads,
  DEFAULT_SESSION_CHUNK_ELEMENTS,
  type FedAvgSession,
  type SessionFinishOutcome,
  type SessionOptions,
} from './fedavg-session.js';

function toError(e: { message: string; stack?: string }): Error {
  const err = new Error(e.message);
  if (e.stack) err.stack = e.stack;
  return err;
}

/** Tuning of {@link aggregate}. */
export interface AggregateOptions {
  /** FedAvg/FedProx threads (see SessionOptions.threads in fedavg-session.ts). Default: as there. */
  threads?: number;
}

/**
 * Runs one aggregation in worker threads and resolves with its outcome
 * (`{ ok: true, outPath, digest, bytesRead, ms, used, rejected }` or a failure value).
 * FedAvg and FedProx run in a parallel session (one float64 sum, every update scanned for
 * NaN/Inf first); the robust strategies in one job thread. Rejects only on unexpected errors
 * (I/O, a crashed worker).
 */
export async function aggregate(
  job: AggregateJob,
  options: AggregateOptions = {},
): Promise<AggregateOutcome> {
  if (job.strategy === 'fedavg' || job.strategy === 'fedprox') return fedAvgJob(job, options);
  return new Promise((resolve, reject) => {
    const worker = startThread(new URL('./aggregate.worker.js', import.meta.url), {
      workerData: { mode: 'job', job },
    });
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

async function fedAvgJob(job: AggregateJob, options: AggregateOptions): Promise<AggregateOutcome> {
  const t0 = performance.now();
  const invalid = validateParams(job);
  if (invalid) return invalid;
  if (job.inputs.length === 0) return { ok: false, code: 'no_inputs', message: 'no inputs' };
  const made = createFedAvgSession(job.globalHeader, {
    ...(job.chunkElements === undefined ? {} : { chunkElements: job.chunkElements }),
    ...(options.threads === undefined ? {} : { threads: options.threads }),
  });
  if (!made.ok) return { ok: false, code: 'unsupported_dtype', message: made.message };
  const session = made.session;
  try {
    return await addAllAndFinish(session, job, t0);
  } finally {
    await session.close();
  }
}
