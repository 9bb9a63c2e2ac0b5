/**
 * Closing a round: aggregate (the FedAvg session's sum, or a robust strategy over the stored
 * updates, chunk by chunk, in a worker thread), measure, checkpoint, and record it all in one
 * transaction that also opens the next round or completes the task. Files are durable (temp +
 * fsync + rename) before the transaction that names them commits.
 */
import { unlink } from 'node:fs/promises';
import { sql } from 'kysely';
import type { Logger } from '../../observability/logger.js';
import { LIVE_ASSIGNMENT } from '../../storage/assignment-repo.js';
import type { AssignmentStatus } from '../../storage/schema.js';
import type { Bus } from '../../bus/bus.js';
import { insertTaskEvent, updateTaskIf } from '../../storage/task-repo.js';
import { insertRound } from '../../storage/training-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import { aggregate } from '../aggregation/runner.js';
import { copyFileAtomic } from '../model-store/atomic-file.js';
import { strategySpec } from '../training-config.js';
import type { TrainingOwnership } from './ownership.js';
import type { TrainingPaths } from './paths.js';
import { capWeightShares, checkFiniteModel } from './aggregate-guard.js';
import { incremental, weightedMetrics, type AcceptedUpdate, type Run } from './run.js';
import { runThread } from '../../threads.js';

export interface CloseDeps {
  writes: WriteQueue;
  paths: TrainingPaths;
  clock: Clock;
  logger: Logger;
  checkpointFrequency: number;
  ownership?: TrainingOwnership;
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
  run: Run,
  updates: readonly AcceptedUpdate[],
  weights: readonly number[],
  outPath: string,
): Promise<{ ok: true; digest: string } | { ok: false; message: string }> {
  const settled = await Promise.allSettled(run.adds);
  if (settled.some((s) => s.status === 'rejected')) run.sessionSound = false;
  const metadata = { format: 'pt', producer: 'ai-farm', task: String(run.taskId), round: String(run.round) };
  // The session summed the reported counts: it is only right when the cap lowered none of them.
  const uncapped = weights.every((w, i) => w === updates[i]!.numSamples);
  if (
    incremental(run) &&
    uncapped &&
    run.session &&
    run.sessionSound &&
    run.session.count === updates.length
  ) {
    const fin = await run.session.finish(outPath, metadata);
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
export async function closeRound(d: CloseDeps, run: Run): Promise<CloseOutcome> {
  const t0 = Date.now();
  const last = run.round >= run.config.rounds;
  const outPath = d.paths.global(run.taskId, run.round + 1);
  const updates = [...run.accepted.values()].sort((a, b) => a.rank - b.rank);
  const weights = capWeightShares(
    updates.map((u) => u.numSamples),
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
    last || run.round % d.checkpointFrequency === 0 ? d.paths.checkpoint(run.taskId, run.round) : null;
  if (checkpoint) await copyFileAtomic(outPath, checkpoint);

  const now = d.clock.now();
  const nowDb = toDbTime(now);
  const at = toDbTime(now, true);
  const { taskId, round } = run;
  const progress = Math.min(100, (100 * round) / run.config.rounds);
  const committed = await d.writes.run(async (trx) => {
    if (d.ownership && !(await d.ownership.holds(trx, taskId))) return false;
    // Only while open and counting exactly the updates aggregated: an update journaled since
    // (by another instance) makes this close stale instead of silently left out.
    const closed = await trx
      .updateTable('training_rounds')
      .set({ state: 'closed', closed_at: at, num_updates: updates.length, metrics: JSON.stringify(metrics) })
      .where('task_id', '=', taskId)
      .where('round', '=', round)
      .where('state', '=', 'open')
      .where('num_updates', '=', updates.length)
      .executeTakeFirst();
    if (Number(closed.numUpdatedRows) === 0) return false;
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
    const live = LIVE_ASSIGNMENT as AssignmentStatus[];
    if (checkpoint) {
      await trx
        .updateTable('task_assignments')
        .set({ checkpoint_path: checkpoint })
        .where('task_id', '=', taskId)
        .where('status', 'in', live)
        .execute();
    }
    await trx
      .updateTable('tasks')
      .set({
        metrics: JSON.stringify({ ...metrics, round }),
        updated_at: nowDb,
        ...(checkpoint ? { checkpoint_path: checkpoint } : {}),
        ...(last
          ? {
              status: 'completed' as const,
              progress: 100,
              finished_at: nowDb,
              result: JSON.stringify({
                rounds: run.config.rounds,
                metrics,
                model_digest: agg.digest,
                model_path: checkpoint,
              }),
            }
          : { progress: sql<number>`CASE WHEN progress < ${progress} THEN ${progress} ELSE progress END` }),
      })
      .where('id', '=', taskId)
      .where('status', 'in', last ? ['running', 'paused', 'completed'] : ['running', 'paused'])
      .execute();
    if (last) {
      await trx
        .updateTable('task_assignments')
        .set({ status: 'completed', progress: 100, finished_at: nowDb, updated_at: nowDb })
        .where('task_id', '=', taskId)
        .where('status', 'in', live)
        .execute();
    }
    await insertTaskEvent(trx, {
      task_id: taskId,
      at,
      kind: last ? 'completed' : 'round_closed',
      message: `round ${round}/${run.config.rounds} closed with ${updates.length} update(s)${last ? '; training complete' : ''}`,
      data: { round, metrics, digest: agg.digest },
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
  await d.writes.run(async (trx) => {
    const task = await trx
      .selectFrom('tasks')
      .select('error_log')
      .where('id', '=', taskId)
      .executeTakeFirst();
    await updateTaskIf(trx, taskId, ['running', 'paused'], {
      status: 'failed',
      error_log: task?.error_log ? `${task.error_log}\n${why}` : why,
      finished_at: toDbTime(now),
      updated_at: toDbTime(now),
    });
    await insertTaskEvent(trx, { task_id: taskId, at: toDbTime(now, true), kind: 'failed', message: why });
  });
  await d.bus.publish('task.control', { task_id: taskId, action: 'stop' });
  await d.bus.publish('task.changed', { task_id: taskId, status: 'failed' });
}
