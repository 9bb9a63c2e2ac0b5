/**
 * Resuming from the last checkpoint. A restart normally resumes the open round from its journal:
 * the global model it started from and every accepted update are files in MODEL_CACHE_DIR. When
 * those files are gone (the folder was lost, wiped, or not on persistent storage), the round
 * cannot be resumed; the task then goes back to the newest checkpoint in CHECKPOINT_DIR (or to
 * no model at all when none was written yet) and redoes the rounds lost since.
 *
 * Round numbers only grow (workers ignore a round older than one they were told of), so the
 * lost round is closed and the next number opens from the checkpoint's weights; the task's
 * `rounds` grows by as many rounds as were lost, so it still trains for as many as asked.
 */
import { access } from 'node:fs/promises';
import type { Logger } from '../../observability/logger.js';
import type { Executor } from '../../storage/executor.js';
import { insertTaskEvent, setTaskConfig } from '../../storage/task-repo.js';
import {
  deleteUpdates,
  insertRound,
  updateOpenRound,
  type RoundRow,
  type UpdateRow,
} from '../../storage/training-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import { copyFileAtomic } from '../model-store/atomic-file.js';
import type { TrainingConfig } from '../training-config.js';
import type { TrainingPaths } from './paths.js';

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/** The files an open round needs to resume that are missing: its global model and its updates. */
export async function missingFiles(row: RoundRow, updates: readonly UpdateRow[]): Promise<string[]> {
  const needed = [...(row.global_path ? [row.global_path] : []), ...updates.map((u) => u.path)];
  const found = await Promise.all(needed.map(exists));
  return needed.filter((_, i) => !found[i]);
}

/** The newest round before `round` whose checkpoint file exists, or 0. */
async function lastCheckpoint(paths: TrainingPaths, taskId: number, round: number): Promise<number> {
  for (let k = round - 1; k >= 1; k--) if (await exists(paths.checkpoint(taskId, k))) return k;
  return 0;
}

export interface RewindDeps {
  db: Executor;
  writes: WriteQueue;
  paths: TrainingPaths;
  clock: Clock;
  logger: Logger;
}

/**
 * Closes the open round `row` (its files are lost) and opens the next one from the newest
 * checkpoint. Returns the task's config with its `rounds` extended, for the run.
 */
export async function rewindToCheckpoint(
  d: RewindDeps,
  taskId: number,
  config: TrainingConfig,
  row: RoundRow,
  missing: readonly string[],
): Promise<TrainingConfig> {
  const lost = Number(row.round);
  const from = await lastCheckpoint(d.paths, taskId, lost);
  const next = lost + 1;
  const global = from > 0 ? d.paths.global(taskId, next) : null;
  const digest = global ? await copyFileAtomic(d.paths.checkpoint(taskId, from), global) : null;
  const rounds = config.rounds + (lost - from);
  const extended: TrainingConfig = { ...config, rounds };
  const now = d.clock.now();
  const at = toDbTime(now, true);
  const message =
    `the files of round ${lost} are missing (${missing.length}, e.g. ${missing[0] ?? '?'}): ` +
    (from > 0
      ? `resumed from the checkpoint of round ${from} as round ${next}`
      : `no checkpoint yet, restarted from no model as round ${next}`) +
    `; rounds ${from + 1}-${lost} are redone, so the task now has ${rounds} rounds`;
  await d.writes.run(async (trx) => {
    await deleteUpdates(trx, taskId, lost);
    const closed = await updateOpenRound(trx, taskId, lost, {
      state: 'closed',
      closed_at: at,
      num_updates: 0,
    });
    if (!closed) throw new Error(`round ${lost} of task ${taskId} was not open`);
    await insertRound(trx, {
      task_id: taskId,
      round: next,
      opened_at: at,
      deadline_at: toDbTime(new Date(now.getTime() + config.round_deadline_s * 1000), true),
      global_path: global,
      global_digest: digest,
    });
    await setTaskConfig(trx, taskId, JSON.stringify(extended), toDbTime(now));
    await insertTaskEvent(trx, {
      task_id: taskId,
      at,
      kind: 'rewound',
      message,
      data: { lost_round: lost, checkpoint_round: from, round: next, rounds },
    });
  });
  d.logger.warn(
    { taskId, lostRound: lost, checkpointRound: from, round: next, missing: missing.length },
    message,
  );
  return extended;
}
