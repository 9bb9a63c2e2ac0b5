/**
 * Loading a training task's open round from the journal: the first time a rank asks for it,
 * after a restart, or for one upload on an instance that does not own the task. Each step is
 * one function; loadRound runs them in order.
 */
import { rm } from 'node:fs/promises';
import type { Kysely } from 'kysely';
import type { Database } from '../../storage/schema.js';
import { findTask, latestEventAt } from '../../storage/task-repo.js';
import * as journal from '../../storage/training-repo.js';
import { parseJson, toDbTime } from '../../storage/values.js';
import { readHeaderFile } from '../safetensors/read.js';
import { isTrainingConfig, type TrainingConfig } from '../training-config.js';
import { repairCount, type TrainingOwnership } from './ownership.js';
import { missingFiles, rewindToCheckpoint, type RewindDeps } from './rewind.js';
import type { RoundStart } from './round-types.js';
import { dbDate } from './run.js';
import { removeStale, STALE_UPLOAD_MS } from './stale-files.js';

export interface LoadDeps extends RewindDeps {
  db: Kysely<Database>;
  ownership?: TrainingOwnership;
}

/** A training task the coordinator may run: running or paused, with a training config. */
export interface TrainingTask {
  id: number;
  type: string;
  status: 'running' | 'paused';
  config: TrainingConfig;
  worldSize: number;
}

/** What loadRound read: where the round starts, its journaled updates, and whether the task is paused. */
export interface LoadedRound {
  start: RoundStart;
  updates: journal.UpdateRow[];
  /** Owned and paused: the milliseconds the round had left when the task was paused. */
  pausedLeftMs: number | null;
}

/** Reads the task's open round (opening round 1 when there is none); undefined when it has none. */
export async function loadRound(d: LoadDeps, taskId: number): Promise<LoadedRound | undefined> {
  const task = await trainingTask(d.db, taskId);
  if (!task) return undefined;
  const owner = !d.ownership || (await d.ownership.acquire(taskId));
  let config = task.config;
  let row = await openRound(d, taskId, config);
  if (!row) return undefined;
  let updates = await journal.listUpdates(d.db, taskId, Number(row.round));
  const missing = owner ? await missingFiles(row, updates) : [];
  if (missing.length > 0) {
    // MODEL_CACHE_DIR lost its files: back to the newest checkpoint (see rewind.ts).
    config = await rewindToCheckpoint(d, taskId, config, row, missing);
    row = await journal.latestRound(d.db, taskId);
    if (!row || row.state !== 'open') return undefined;
    updates = [];
  }
  await clearIncoming(d, taskId);
  const globalPath = row.global_path;
  const start: RoundStart = {
    taskId,
    type: task.type,
    config,
    worldSize: task.worldSize,
    number: Number(row.round),
    deadlineAt: dbDate(row.deadline_at),
    extensions: Number(row.extensions),
    globalPath,
    globalDigest: row.global_digest,
    reference: await referenceOf(globalPath ?? updates[0]?.path),
    following: !owner,
  };
  if (owner && Number(row.num_updates) !== updates.length)
    await repairCount(d.db, taskId, start.number, updates.length);
  const pausedLeftMs =
    owner && task.status === 'paused' ? await pausedLeft(d, taskId, start.deadlineAt) : null;
  return { start, updates, pausedLeftMs };
}

/** The task, if it is a running or paused training task. */
async function trainingTask(db: Kysely<Database>, taskId: number): Promise<TrainingTask | undefined> {
  const task = await findTask(db, taskId);
  if (!task || (task.status !== 'running' && task.status !== 'paused')) return undefined;
  const config = parseJson<TrainingConfig>(task.config);
  if (!config || !isTrainingConfig(config)) return undefined;
  return { id: taskId, type: task.type, status: task.status, config, worldSize: Number(task.world_size) };
}

/** The task's latest round if it is open; round 1 is opened when the task has none. */
async function openRound(d: LoadDeps, taskId: number, config: TrainingConfig) {
  let row = await journal.latestRound(d.db, taskId);
  if (!row) {
    // Owner or not: a follower placing ranks before the owner opened round 1 must not send them
    // a task without its round (workers would fail it).
    const now = d.clock.now();
    await d.writes.run((trx) =>
      journal.openFirstRound(trx, {
        task_id: taskId,
        opened_at: toDbTime(now, true),
        deadline_at: toDbTime(new Date(now.getTime() + config.round_deadline_s * 1000), true),
      }),
    );
    row = await journal.latestRound(d.db, taskId);
  }
  return row && row.state === 'open' ? row : undefined;
}

/**
 * Uploads cut by a restart left temporary files; none can be in flight before the round is
 * loaded. With several instances on shared storage another instance's may be: only the files
 * left untouched for STALE_UPLOAD_MS go (here, and again each time a round closes).
 */
async function clearIncoming(d: LoadDeps, taskId: number): Promise<void> {
  if (!d.ownership) await rm(d.paths.incoming(taskId), { recursive: true, force: true });
  else await removeStale(d.paths.incoming(taskId), STALE_UPLOAD_MS, d.clock.now().getTime());
}

/** The layout every update must have: the global model's, or round 1's first update's. */
async function referenceOf(path: string | undefined) {
  if (!path) return null;
  const h = await readHeaderFile(path);
  return h.ok ? h.header : null;
}

/**
 * Paused when the server stopped: the deadline stays stopped, with the time it had left when
 * the task was paused (the `paused` event's time), until the task is resumed.
 */
async function pausedLeft(d: LoadDeps, taskId: number, deadlineAt: Date): Promise<number> {
  const pausedAt = await latestEventAt(d.db, taskId, 'paused');
  const from = pausedAt ? dbDate(pausedAt) : d.clock.now();
  return Math.max(0, deadlineAt.getTime() - from.getTime());
}
