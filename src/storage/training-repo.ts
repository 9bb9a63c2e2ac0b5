import { sql, type Selectable, type Updateable } from 'kysely';
import type { Executor } from './executor.js';
import { LIVE_ASSIGNMENT } from './assignment-repo.js';
import type { AssignmentStatus, RoundUpdatesTable, TrainingRoundsTable } from './schema.js';
import { parseJson, updatedAny } from './values.js';

type Db = Executor;
export type RoundRow = Selectable<TrainingRoundsTable>;
export type UpdateRow = Selectable<RoundUpdatesTable>;
/** An accepted update as journaled (metrics as JSON). */
export type NewUpdate = Omit<RoundUpdatesTable, 'id' | 'metrics'> & { metrics: string | null };

/** Opens a round; fails on the unique key when it already exists. */
export async function insertRound(
  db: Db,
  r: {
    task_id: number;
    round: number;
    opened_at: string;
    deadline_at: string;
    global_path: string | null;
    global_digest: string | null;
  },
): Promise<void> {
  await db
    .insertInto('training_rounds')
    .values({ ...r, state: 'open' })
    .execute();
}

/**
 * Opens a task's first round unless it exists already: whichever instance first places a rank
 * opens it, so every rank's `task` message carries the round whoever will aggregate it.
 */
export async function openFirstRound(
  db: Db,
  r: { task_id: number; opened_at: string; deadline_at: string },
): Promise<void> {
  await db
    .insertInto('training_rounds')
    .values({ ...r, round: 1, global_path: null, global_digest: null, state: 'open' })
    .orIgnore()
    .execute();
}

/** Every round of a task, as a query to narrow and order. */
const roundsOf = (db: Db, taskId: number) =>
  db.selectFrom('training_rounds').selectAll().where('task_id', '=', taskId);

/**
 * A round's metrics as shown: the close's, with `refused_late` (the row's count) when any
 * update came late or `overSelect` says the task over-selects.
 */
export function roundMetrics(r: RoundRow, overSelect: boolean): Record<string, unknown> | null {
  const metrics = parseJson<Record<string, unknown>>(r.metrics);
  const late = Number(r.refused_late ?? 0);
  if (late === 0 && !(overSelect && metrics)) return metrics;
  return { ...metrics, refused_late: late };
}

/** True when a task's stored config (JSON) over-selects (config.over_select). */
export function overSelects(config: unknown): boolean {
  return parseJson<{ over_select?: number }>(config)?.over_select !== undefined;
}

export async function findRound(db: Db, taskId: number, round: number): Promise<RoundRow | undefined> {
  return roundsOf(db, taskId).where('round', '=', round).executeTakeFirst();
}

/** The latest round of a task (open or closed). */
export async function latestRound(db: Db, taskId: number): Promise<RoundRow | undefined> {
  return roundsOf(db, taskId).orderBy('round', 'desc').limit(1).executeTakeFirst();
}

export async function listRounds(db: Db, taskId: number): Promise<RoundRow[]> {
  return roundsOf(db, taskId).orderBy('round', 'asc').execute();
}

/** Changes a round only while it is open; true when it was. */
export async function updateOpenRound(
  db: Db,
  taskId: number,
  round: number,
  changes: Updateable<TrainingRoundsTable>,
): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('training_rounds')
      .set(changes)
      .where('task_id', '=', taskId)
      .where('round', '=', round)
      .where('state', '=', 'open'),
  );
}

/** Running tasks with an open round: what a restart resumes. */
export async function listOpenRounds(db: Db): Promise<RoundRow[]> {
  return db
    .selectFrom('training_rounds')
    .innerJoin('tasks', 'tasks.id', 'training_rounds.task_id')
    .selectAll('training_rounds')
    .where('training_rounds.state', '=', 'open')
    .where('tasks.status', 'in', ['running', 'paused'])
    .execute();
}

/** Records an accepted update; the unique key (task, round, rank) refuses a second one. */
export async function insertUpdate(db: Db, u: NewUpdate): Promise<void> {
  await db.insertInto('round_updates').values(u).execute();
}

/** Forgets the updates of a round's aggregate (their files are gone). */
export async function deleteUpdates(db: Db, taskId: number, round: number): Promise<void> {
  await db
    .deleteFrom('round_updates')
    .where('task_id', '=', taskId)
    .where('buffer_round', '=', round)
    .execute();
}

/** The updates folded into `round`'s aggregate (async: its buffer), in acceptance order. */
export async function listUpdates(db: Db, taskId: number, round: number): Promise<UpdateRow[]> {
  return db
    .selectFrom('round_updates')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('buffer_round', '=', round)
    .orderBy('id', 'asc')
    .execute();
}

/** Who trained in each of a task's rounds: every update journaled, oldest first. */
export async function listTaskUpdates(db: Db, taskId: number) {
  return db
    .selectFrom('round_updates')
    .select(['round', 'buffer_round', 'rank', 'attempt', 'client_id', 'accepted_at'])
    .where('task_id', '=', taskId)
    .orderBy('id', 'asc')
    .execute();
}

export async function findUpdate(
  db: Db,
  taskId: number,
  round: number,
  rank: number,
): Promise<UpdateRow | undefined> {
  return db
    .selectFrom('round_updates')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('round', '=', round)
    .where('rank', '=', rank)
    .executeTakeFirst();
}

/**
 * Closes a round only while it is open and counts exactly `numUpdates` updates: an update
 * journaled since (by another instance) makes the close stale instead of silently left out.
 */
export async function closeOpenRound(
  db: Db,
  c: { taskId: number; round: number; numUpdates: number; at: string; metrics: string },
): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('training_rounds')
      .set({ state: 'closed', closed_at: c.at, num_updates: c.numUpdates, metrics: c.metrics })
      .where('task_id', '=', c.taskId)
      .where('round', '=', c.round)
      .where('state', '=', 'open')
      .where('num_updates', '=', c.numUpdates),
  );
}

/**
 * A closed round that is not the last, on its running or paused task: the round's metrics,
 * progress (never lowered) and the checkpoint when one was written.
 */
export async function recordRoundOnTask(
  db: Db,
  r: { taskId: number; metrics: string; progress: number; checkpoint: string | null; at: string },
): Promise<void> {
  await db
    .updateTable('tasks')
    .set({
      metrics: r.metrics,
      updated_at: r.at,
      ...(r.checkpoint ? { checkpoint_path: r.checkpoint } : {}),
      progress: sql<number>`CASE WHEN progress < ${r.progress} THEN ${r.progress} ELSE progress END`,
    })
    .where('id', '=', r.taskId)
    .where('status', 'in', ['running', 'paused'])
    .execute();
}

/**
 * Journals an accepted update only while the round it goes into (`buffer_round`) is open and,
 * given a `limit`, has fewer updates than it (over-selection: the first K close it), counting
 * it in that round's row.
 * False when the round is no longer open (closed meanwhile, perhaps by another instance) or full.
 */
export async function journalUpdate(
  trx: Db,
  u: NewUpdate & { buffer_round: number },
  limit?: number,
): Promise<boolean> {
  // The row lock taken here orders this insert against a concurrent close of the round.
  let q = trx
    .updateTable('training_rounds')
    .set({ num_updates: sql<number>`num_updates + 1` })
    .where('task_id', '=', u.task_id)
    .where('round', '=', u.buffer_round)
    .where('state', '=', 'open');
  if (limit !== undefined) q = q.where('num_updates', '<', limit);
  const res = await q.executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0) return false;
  await insertUpdate(trx, u);
  return true;
}

/** Counts one more late update refused by round `round` (open or closed). */
export async function countLateUpdate(db: Db, taskId: number, round: number): Promise<void> {
  await db
    .updateTable('training_rounds')
    .set({ refused_late: sql<number>`refused_late + 1` })
    .where('task_id', '=', taskId)
    .where('round', '=', round)
    .execute();
}

/** Makes an open round's counter agree with its journal (rounds opened before migration 006). */
export async function repairCount(db: Db, taskId: number, round: number, count: number): Promise<void> {
  await db
    .updateTable('training_rounds')
    .set({ num_updates: count })
    .where('task_id', '=', taskId)
    .where('round', '=', round)
    .where('state', '=', 'open')
    .where('num_updates', '<>', count)
    .execute();
}

/** The live leases on a task's ranks, wherever their clients are connected. */
export async function liveRanks(
  db: Db,
  taskId: number,
): Promise<{ client_id: string; rank: number; attempt: number }[]> {
  const rows = await db
    .selectFrom('task_assignments')
    .select(['client_id', 'rank', 'attempt'])
    .where('task_id', '=', taskId)
    .where('status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .execute();
  return rows.map((r) => ({ client_id: r.client_id, rank: Number(r.rank), attempt: Number(r.attempt) }));
}

/** How many events of `kind` a task has (e.g. the async updates refused as too stale). */
export async function countTaskEvents(db: Db, taskId: number, kind: string): Promise<number> {
  const row = await db
    .selectFrom('task_events')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('task_id', '=', taskId)
    .where('kind', '=', kind)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/**
 * When each client's accepted updates of a task's rounds since `fromRound` came, with their
 * round's opening (the speed of sampled rounds: docs/training.md).
 */
export async function roundTimes(
  db: Db,
  taskId: number,
  fromRound: number,
): Promise<{ client_id: string; round: number; accepted_at: string; opened_at: string }[]> {
  const rows = await db
    .selectFrom('round_updates as u')
    .innerJoin('training_rounds as r', (j) =>
      j.onRef('r.task_id', '=', 'u.task_id').onRef('r.round', '=', 'u.round'),
    )
    .select(['u.client_id', 'u.round', 'u.accepted_at', 'r.opened_at'])
    .where('u.task_id', '=', taskId)
    .where('u.round', '>=', fromRound)
    .orderBy('u.round', 'asc')
    .execute();
  return rows.map((r) => ({
    client_id: r.client_id,
    round: Number(r.round),
    accepted_at: String(r.accepted_at),
    opened_at: String(r.opened_at),
  }));
}
