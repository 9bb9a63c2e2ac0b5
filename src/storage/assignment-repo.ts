import type { Selectable, Updateable } from 'kysely';
import type { Executor } from './executor.js';
import { chunks, consecutiveIds, idsOfInserts, insertRows } from './bulk.js';
import { keepNewestOfTask, newestOfTask } from './task-history.js';
import type { AssignmentStatus, TaskAssignmentsTable } from './schema.js';
import { updatedAny } from './values.js';

type Db = Executor;
export type AssignmentRow = Selectable<TaskAssignmentsTable>;

/** Statuses in which an assignment is a live lease. */
export const LIVE_ASSIGNMENT: readonly AssignmentStatus[] = ['assigned', 'training', 'paused'];

export interface NewAssignment {
  task_id: number;
  client_id: string;
  rank: number;
  attempt: number;
  at: string;
}

function assignmentValues(a: NewAssignment) {
  return {
    task_id: a.task_id,
    client_id: a.client_id,
    rank: a.rank,
    attempt: a.attempt,
    assigned_at: a.at,
    updated_at: a.at,
    status: 'assigned' as const,
  };
}

export async function insertAssignment(db: Db, a: NewAssignment): Promise<number> {
  const res = await db.insertInto('task_assignments').values(assignmentValues(a)).executeTakeFirstOrThrow();
  return Number(res.insertId);
}

/** Inserts many assignments with multi-row INSERTs; returns their ids in order. */
export async function insertAssignments(db: Db, rows: readonly NewAssignment[]): Promise<number[]> {
  if (rows.length === 1) return [await insertAssignment(db, rows[0] as NewAssignment)];
  if (await consecutiveIds(db)) {
    const columns = ['task_id', 'client_id', 'rank', 'attempt', 'assigned_at', 'updated_at', 'status'];
    const values = rows.map((a) => [a.task_id, a.client_id, a.rank, a.attempt, a.at, a.at, 'assigned']);
    return idsOfInserts(db, await insertRows(db, 'task_assignments', columns, values));
  }
  const ids: number[] = [];
  for (const part of chunks(rows)) {
    await db.insertInto('task_assignments').values(part.map(assignmentValues)).execute();
    // Ids may have gaps: find each row by its unique (task, rank, attempt).
    const found = await db
      .selectFrom('task_assignments')
      .select(['id', 'task_id', 'rank', 'attempt'])
      .where(
        'task_id',
        'in',
        part.map((a) => a.task_id),
      )
      .execute();
    const byKey = new Map(found.map((r) => [`${r.task_id}:${r.rank}:${r.attempt}`, Number(r.id)]));
    for (const a of part) {
      const id = byKey.get(`${a.task_id}:${a.rank}:${a.attempt}`);
      if (id === undefined) throw new Error(`assignment of task ${a.task_id} not found after insert`);
      ids.push(id);
    }
  }
  return ids;
}

/** Changes an assignment only while it is still in one of `from` (a lease can end once). */
export async function updateAssignmentIf(
  db: Db,
  id: number,
  from: readonly AssignmentStatus[],
  changes: Updateable<TaskAssignmentsTable>,
): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('task_assignments')
      .set(changes)
      .where('id', '=', id)
      .where('status', 'in', from as AssignmentStatus[]),
  );
}

/** Names the checkpoint every live assignment of a task can resume from. */
export async function setLiveCheckpoint(db: Db, taskId: number, checkpoint: string): Promise<void> {
  await db
    .updateTable('task_assignments')
    .set({ checkpoint_path: checkpoint })
    .where('task_id', '=', taskId)
    .where('status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .execute();
}

export async function listAssignments(db: Db, taskId: number): Promise<AssignmentRow[]> {
  return db
    .selectFrom('task_assignments')
    .selectAll()
    .where('task_id', '=', taskId)
    .orderBy('rank', 'asc')
    .orderBy('attempt', 'asc')
    .execute();
}

/** How many live assignments (leases) a task has. */
export async function countLiveAssignments(db: Db, taskId: number): Promise<number> {
  const r = await db
    .selectFrom('task_assignments')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('task_id', '=', taskId)
    .where('status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

/** Whether a client authenticated with `tokenId` ever held an assignment of the task. */
export async function everAssignedToToken(db: Db, taskId: number, tokenId: string): Promise<boolean> {
  const row = await db
    .selectFrom('task_assignments')
    .innerJoin('clients', 'clients.id', 'task_assignments.client_id')
    .select('task_assignments.id')
    .where('task_assignments.task_id', '=', taskId)
    .where('clients.token_id', '=', tokenId)
    .executeTakeFirst();
  return row !== undefined;
}

export async function listLiveAssignments(db: Db): Promise<AssignmentRow[]> {
  return db
    .selectFrom('task_assignments')
    .selectAll()
    .where('status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .execute();
}

/** A live assignment with what is known of its client (null fields: no client row). */
export interface LiveAssignmentWithClient extends AssignmentRow {
  client_connected: number | null;
  client_instance: string | null;
  /** 1 when the client was last seen before the cutoff, or has no row. */
  client_silent: number;
}

/**
 * Live assignments not updated since `before`, with their client's connection facts and
 * whether it was last seen before `before` too: the candidates of the stranded-lease sweep.
 */
export async function listQuietLiveAssignments(db: Db, before: string): Promise<LiveAssignmentWithClient[]> {
  const rows = await db
    .selectFrom('task_assignments as a')
    .leftJoin('clients as c', 'c.id', 'a.client_id')
    .selectAll('a')
    .select((eb) => [
      'c.connected as client_connected',
      'c.instance_id as client_instance',
      eb.case().when('c.last_seen', '>=', before).then(0).else(1).end().as('client_silent'),
    ])
    .where('a.status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .where('a.updated_at', '<', before)
    .execute();
  return rows.map((r) => ({ ...r, client_silent: Number(r.client_silent) }));
}

export async function listClientAssignments(
  db: Db,
  clientId: string,
  limit: number,
): Promise<AssignmentRow[]> {
  return db
    .selectFrom('task_assignments')
    .selectAll()
    .where('client_id', '=', clientId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

export async function insertMetricSample(
  db: Db,
  m: {
    task_id: number;
    at: string;
    rank: number;
    attempt: number;
    round: number | null;
    progress: number;
    metrics: unknown;
  },
): Promise<void> {
  await db
    .insertInto('task_metrics')
    .values({ ...m, metrics: JSON.stringify(m.metrics ?? {}) })
    .execute();
}

export async function listMetricSamples(db: Db, taskId: number, limit: number) {
  return newestOfTask(db, 'task_metrics', taskId, limit);
}

/** Keeps at most `keep` history rows for a task, dropping the oldest. */
export async function pruneMetricSamples(db: Db, taskId: number, keep: number): Promise<void> {
  await keepNewestOfTask(db, 'task_metrics', taskId, keep);
}
