/**
 * Closing a round: aggregate (the FedAvg session's sum, or a robust strategy over the stored
 * updates, chunk by chunk, in a worker thread), measure, checkpoint, and record it all in one
 * transaction that also opens the next round or completes the task. Files are durable (temp +
 * fsync + rename) before the transaction that names them commits.
 */
import { unlink } from 'node:fs/promises';
import type { Logger } from '../../observability/logger.js';
import { setLiveCheckpoint } from '../../storage/assignment-repo.js';
import { announceStatus, type Bus } from '../../bus/bus.js';
import { insertTaskEvent } from '../../storage/task-repo.js';
import {
  closeOpenRound,
  insertRound,
  recordRoundOnTask,
  updateOpenRound,
} from '../../storage/training-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import { failTask as failTaskForGood, finishTraining } from '../../tasks/lifecycle.js';
import { aggregate } from '../aggregation/runner.js';
import { copyFileAtomic } from '../model-store/atomic-file.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { strategySpec } from '../training-config.js';
import type { TrainingOwnership } from './ownership.js';
import type { TrainingPaths } from './paths.js';
import { capWeightShares, checkFiniteModel } from './aggregate-guard.js';
import type { RoundSum } from './round-sum.js';
import { serverMix, updateWeight } from './staleness.js';
import { weightedMetrics, type AcceptedUpdate, type RoundView } from './run.js';
import { runThread } from '../../threads.js';

export interface CloseDeps {
  writes: WriteQueue;
  paths: TrainingPaths;
  clock: Clock;
  logger: Logger;
  checkpointFrequency: number;
  ownership?: TrainingOwnership;
}

/** What a close reads of its round (a Round has it). */
export interface ClosingRound extends RoundView {
  type: string;
  reference: SafetensorsHeader | null;
  sum: Pick<RoundSum, 'finish'>;
}

/** What a closed round produced. */
export type CloseOutcome =
  | {
      ok: true;
      last: boolean;
      outPath: string;
      digest: string;
      metrics: Record<string, number>;
      checkpoint: string | null;
    }
  /** `stale`: the round changed under the close (closed elsewhere, or more updates journaled). */
  | { ok: false; message: string; stale?: boolean };

/**
 * Aggregates the accepted updates of the open round into the next global model, with the
 * effective FedAvg `weights` (by update, after the share cap). The result is checked finite
 * before it is returned: a float32 running sum that overflowed is redone in float64 from the
 * journal's files, and an aggregate still not finite fails the round.
 */
async function aggregateRound(
  run: ClosingRound,
  updates: readonly AcceptedUpdate[],
  weights: readonly number[],
  outPath: string,
): Promise<{ ok: true; digest: string } | { ok: false; message: string }> {
  const metadata = { format: 'pt', producer: 'ai-farm', task: String(run.taskId), round: String(run.number) };
  const lr = run.config.async?.server_lr ?? 1;
  const mix = serverMix(lr, run.globalPath, `${outPath}.mean`);
  if (!mix) return aggregateUpdates(run, updates, weights, outPath, metadata);
  // Async with server_lr < 1: the buffer's mean, then old + server_lr (mean - old).
  const mean = await aggregateUpdates(run, updates, weights, mix[1]!.path, metadata);
  if (!mean.ok || !run.reference) return mean.ok ? { ok: false, message: 'no update to aggregate' } : mean;
  const r = await aggregate({
    strategy: 'fedavg',
    inputs: mix,
    globalHeader: run.reference,
    outPath,
    metadata,
  });
  await unlink(mix[1]!.path).catch(() => undefined);
  return r.ok ? { ok: true, digest: r.digest } : { ok: false, message: `${r.code}: ${r.message}` };
}

/** The weighted mean of the updates (the running sum's, or one pass over the files). */
async function aggregateUpdates(
  run: ClosingRound,
  updates: readonly AcceptedUpdate[],
  weights: readonly number[],
  outPath: string,
  metadata: Record<string, string>,
): Promise<{ ok: true; digest: string } | { ok: false; message: string }> {
  // The sum added the uncapped weights: it is only right when the cap lowered none of them.
  const uncapped = weights.every((w, i) => w === updateWeight(run.config, run.number, updates[i]!));
  if (uncapped) {
    const fin = await run.sum.finish(updates.length, outPath, metadata);
    if (fin.ok && (await checkFiniteModel(outPath)).ok) return { ok: true, digest: fin.digest };
  }
  if (!run.reference) return { ok: false, message: 'no update to aggregate' };
  // Robust strategies, a capped or untrusted sum, or one that overflowed: one pass over the files.
  const r = await aggregate({
    ...strategySpec(run.config.aggregation),
    inputs: updates.map((u, i) => ({ path: u.path, weight: weights[i]! })),
    globalHeader: run.reference,
    outPath,
    metadata,
  });
  if (!r.ok) return { ok: false, message: `${r.code}: ${r.message}` };
  const finite = await checkFiniteModel(outPath);
  if (!finite.ok) {
    await unlink(outPath).catch(() => undefined);
    return { ok: false, message: `${finite.message}; it is not published` };
  }
  return { ok: true, digest: r.digest };
}

/** Held-out loss and accuracy of a train_mnist model, computed in a worker thread. */
async function heldOut(path: string, logger: Logger): Promise<Record<string, number>> {
  try {
    const r = await runThread<{ ok: boolean; loss?: number; accuracy?: number; message?: string }>(
      new URL('./evaluate.worker.js', import.meta.url),
      { path },
    );
    if (r.ok && r.loss !== undefined && r.accuracy !== undefined) {
      return { heldout_loss: r.loss, heldout_accuracy: r.accuracy };
    }
    logger.warn({ path, message: r.message }, 'held-out evaluation refused the model');
  } catch (err) {
    logger.warn({ err, path }, 'held-out evaluation failed');
  }
  return {};
}

/**
 * Closes the open round of `run`. On success the journal says: this round closed, and either the
 * next round is open (starting from the new global model) or the task completed with its result.
 */
export async function closeRound(d: CloseDeps, run: ClosingRound): Promise<CloseOutcome> {
  const t0 = Date.now();
  const last = run.number >= run.config.rounds;
  const outPath = d.paths.global(run.taskId, run.number + 1);
  const updates = [...run.accepted.values()].sort((a, b) => a.rank - b.rank || a.round - b.round);
  const weights = capWeightShares(
    updates.map((u) => updateWeight(run.config, run.number, u)),
    run.config.aggregation.max_weight_share ?? 1,
  );
  const agg = await aggregateRound(run, updates, weights, outPath);
  if (!agg.ok) return agg;
  const metrics: Record<string, number> = {
    ...weightedMetrics(updates.map((u, i) => ({ ...u, numSamples: weights[i]! }))),
    num_samples: updates.reduce((s, u) => s + u.numSamples, 0),
    aggregation_ms: Date.now() - t0,
  };
  if (run.type === 'train_mnist') Object.assign(metrics, await heldOut(outPath, d.logger));
  const checkpoint =
    last || run.number % d.checkpointFrequency === 0 ? d.paths.checkpoint(run.taskId, run.number) : null;
  if (checkpoint) await copyFileAtomic(outPath, checkpoint);

  const now = d.clock.now();
  const nowDb = toDbTime(now);
  const at = toDbTime(now, true);
  const { taskId, number: round } = run;
  const progress = Math.min(100, (100 * round) / run.config.rounds);
  // Async: the staleness of each update that made the version (the panel's histogram).
  const staleness = run.config.async ? { staleness: updates.map((u) => round - u.round) } : {};
  const committed = await d.writes.run(async (trx) => {
    if (d.ownership && !(await d.ownership.holds(trx, taskId))) return false;
    // Only while open and counting exactly the updates aggregated: an update journaled since
    // (by another instance) makes this close stale instead of silently left out.
    const closed = await closeOpenRound(trx, {
      taskId,
      round,
      numUpdates: updates.length,
      at,
      metrics: JSON.stringify({ ...metrics, ...staleness }),
    });
    if (!closed) return false;
    if (!last) {
      await insertRound(trx, {
        task_id: taskId,
        round: round + 1,
        opened_at: at,
        deadline_at: toDbTime(new Date(now.getTime() + run.config.round_deadline_s * 1000), true),
        global_path: outPath,
        global_digest: agg.digest,
      });
    }
    if (checkpoint) await setLiveCheckpoint(trx, taskId, checkpoint);
    if (last) {
      await finishTraining(
        trx,
        {
          taskId,
          metrics: { ...metrics, round },
          result: { rounds: run.config.rounds, metrics, model_digest: agg.digest, model_path: checkpoint },
          checkpoint,
        },
        now,
      );
    } else {
      await recordRoundOnTask(trx, {
        taskId,
        metrics: JSON.stringify({ ...metrics, round }),
        progress,
        checkpoint,
        at: nowDb,
      });
    }
    await insertTaskEvent(trx, {
      task_id: taskId,
      at,
      kind: last ? 'completed' : 'round_closed',
      message: `round ${round}/${run.config.rounds} closed with ${updates.length} update(s)${last ? '; training complete' : ''}`,
      data: { round, metrics, digest: agg.digest, ...staleness },
    });
    return true;
  });
  if (!committed) return { ok: false, stale: true, message: `round ${round} changed during its close` };
  // The next global model is durable and recorded: this round's updates are no longer needed.
  await Promise.all(updates.map((u) => unlink(u.path).catch(() => undefined)));
  return { ok: true, last, outPath, digest: agg.digest, metrics, checkpoint };
}

/** Fails a training task for good (its clients are told to stop). */
export async function failTask(d: CloseDeps & { bus: Bus }, taskId: number, why: string): Promise<void> {
  const now = d.clock.now();
  await d.writes.run((trx) => failTaskForGood(trx, taskId, why, now));
  await d.bus.publish('task.control', { task_id: taskId, action: 'stop' });
  await announceStatus(d.bus, taskId, 'failed');
}

/** Journals a round's new deadline (one more extension) with its `round_extended` event, `why` first. */
export async function journalExtension(
  d: Pick<CloseDeps, 'writes' | 'clock'>,
  r: { taskId: number; number: number; deadlineAt: Date; extensions: number },
  why: string,
): Promise<void> {
  await d.writes.run(async (trx) => {
    await updateOpenRound(trx, r.taskId, r.number, {
      deadline_at: toDbTime(r.deadlineAt, true),
      extensions: r.extensions,
    });
    await insertTaskEvent(trx, {
      task_id: r.taskId,
      at: toDbTime(d.clock.now(), true),
      kind: 'round_extended',
      message: `${why}; waiting until ${r.deadlineAt.toISOString()}`,
    });
  });
}
