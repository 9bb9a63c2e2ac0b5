/**
 * Runs one aggregation job (the job worker thread calls this; tests may too). FedAvg/FedProx run
 * here, in the single-threaded reference accumulator (aggregate() runs them in a parallel session
 * instead); the robust strategies on `job.threads` threads, or here with 1.
 */
import { performance } from 'node:perf_hooks';
import { createAccumulator } from './fedavg.js';
import { flatLayout } from './layout.js';
import { defaultThreads } from './fedavg-session.js';
import { runRobust } from './robust.js';
import { runRobustParallel } from './robust-parallel.js';
import type { AggregateJob, AggregateOutcome, AggregationFailure, RejectedInput } from './types.js';

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks strategy parameters; returns a failure naming the bad one. */
export function validateParams(job: AggregateJob): AggregationFailure | undefined {
  const bad = (message: string): AggregationFailure => ({ ok: false, code: 'invalid_params', message });
  switch (job.strategy) {
    case 'fedavg':
    case 'median':
      return undefined;
    case 'fedprox': {
      const mu = job.params?.mu;
      return typeof mu === 'number' && Number.isFinite(mu) && mu >= 0
        ? undefined
        : bad('fedprox needs mu >= 0');
    }
    case 'trimmed_mean': {
      const { beta, trim } = job.params ?? {};
      if (trim !== undefined) return isCount(trim) ? undefined : bad('trim must be a non-negative integer');
      return typeof beta === 'number' && beta >= 0 && beta < 0.5
        ? undefined
        : bad('beta must be in [0, 0.5)');
    }
    case 'krum':
    case 'multi_krum': {
      if (!isCount(job.params?.f)) return bad('f must be a non-negative integer');
      if (job.strategy === 'multi_krum' && !(isCount(job.params.m) && job.params.m >= 1)) {
        return bad('m must be a positive integer');
      }
      return undefined;
    }
    default:
      return bad(`unknown strategy ${JSON.stringify((job as { strategy: unknown }).strategy)}`);
  }
}

/** What {@link addAllAndFinish} drives: the reference accumulator or a threaded session. */
interface WeightedSum {
  readonly bytesRead: number;
  add(path: string, weight: number): Promise<{ ok: true } | (Omit<RejectedInput, 'index'> & { ok: false })>;
  finish(
    outPath: string,
    metadata?: Record<string, string>,
  ): Promise<{ ok: true; outPath: string; digest: string } | { ok: false }>;
}

/**
 * Adds every input of a FedAvg/FedProx job to `sum` in order, rejecting the unusable ones, and
 * writes the mean; `t0` is when the job started (its `ms`).
 */
export async function addAllAndFinish(
  sum: WeightedSum,
  job: AggregateJob,
  t0: number,
): Promise<AggregateOutcome> {
  const rejected: RejectedInput[] = [];
  const used: number[] = [];
  for (const [index, input] of job.inputs.entries()) {
    const r = await sum.add(input.path, input.weight);
    if (r.ok) used.push(index);
    else {
      const { code, message, tensor } = r;
      rejected.push(tensor === undefined ? { index, code, message } : { index, code, message, tensor });
    }
  }
  const fin = await sum.finish(job.outPath, job.metadata);
  if (!fin.ok) return { ok: false, code: 'too_few_inputs', message: 'every input was rejected', rejected };
  const ms = performance.now() - t0;
  return { ok: true, outPath: fin.outPath, digest: fin.digest, bytesRead: sum.bytesRead, ms, used, rejected };
}

/** Runs `job` here and now. Unexpected I/O errors throw; expected outcomes are returned. */
export async function runAggregation(job: AggregateJob): Promise<AggregateOutcome> {
  const t0 = performance.now();
  const invalid = validateParams(job);
  if (invalid) return invalid;
  if (job.inputs.length === 0) return { ok: false, code: 'no_inputs', message: 'no inputs' };
  const built = flatLayout(job.globalHeader);
  if (!built.ok) return { ok: false, code: 'unsupported_dtype', message: built.message };
  const layout = built.layout;

  if (job.strategy === 'fedavg' || job.strategy === 'fedprox') {
    const made = createAccumulator(job.globalHeader, {
      ...(job.chunkElements === undefined ? {} : { chunkElements: job.chunkElements }),
    });
    if (!made.ok) return { ok: false, code: 'unsupported_dtype', message: made.message };
    return addAllAndFinish(made.accumulator, job, t0);
  }
  const threads = Math.max(1, Math.floor(job.threads ?? defaultThreads(layout.totalElements)));
  const r =
    threads > 1
      ? await runRobustParallel(job, job.inputs, layout, job.outPath, threads, job.metadata)
      : await runRobust(job, job.inputs, layout, job.outPath, job.metadata);
  return r.ok ? { ...r, ms: performance.now() - t0 } : r;
}
