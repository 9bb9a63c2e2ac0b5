import type { Selectable, UpdateObject } from 'kysely';
import type { Executor } from './executor.js';
import { chunks, consecutiveIds, idsOfInserts, insertRows } from './bulk.js';
import { pageOf } from './page.js';
import type { Database, TaskStatus, TasksTable } from './schema.js';
import { parseJson, updatedAny } from './values.js';

type Db = Executor;
export type TaskRow = Selectable<TasksTable>;

export interface NewTaskRow {
  type: string;
  name: string | null;
  requirements: string;
  config: string | null;
  priority: number;
  max_attempts: number;
  world_size: number;
  created_by: string | null;
  /** `token:<id>` or `user:<id>`; null only for rows made outside the API (tests, benchmarks). */
  owner?: string | null;
  now: string;
}

export interface TaskFilter {
  status?: TaskStatus | undefined;
  type?: string | undefined;
  client_id?: string | undefined;
  created_by?: string | undefined;
  owner?: string | undefined;
  limit: number;
  offset: number;
}

function taskValues(t: NewTaskRow) {
  return {
    type: t.type,
    name: t.name,
    requirements: t.requirements,
    config: t.config,
    priority: t.priority,
    max_attempts: t.max_attempts,
    world_size: t.world_size,
    created_by: t.created_by,
    owner: t.owner ?? null,
    status: 'pending' as const,
    created_at: t.now,
    updated_at: t.now,
  };
}

const TASK_COLUMNS = [
  'type',
  'name',
  'requirements',
  'config',
  'priority',
  'max_attempts',
  'world_size',
  'created_by',
  'owner',
  'status',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof ReturnType<typeof taskValues>)[];

export async function insertTask(db: Db, t: NewTaskRow): Promise<number> {
  const res = await db.insertInto('tasks').values(taskValues(t)).executeTakeFirstOrThrow();
  return Number(res.insertId);
}

/** Inserts many pending tasks with multi-row INSERTs; returns their ids in order. */
export async function insertTasks(db: Db, rows: readonly NewTaskRow[]): Promise<number[]> {
  if (rows.length === 1) return [await insertTask(db, rows[0] as NewTaskRow)];
  if (await consecutiveIds(db)) {
    const values = rows.map((t) => {
      const v = taskValues(t);
      return TASK_COLUMNS.map((c) => v[c]);
    });
    return idsOfInserts(db, await insertRows(db, 'tasks', TASK_COLUMNS, values));
  }
  // Without consecutive auto-increment ids the only exact ids are one insert each.
  const ids: number[] = [];
  for (const r of rows) ids.push(await insertTask(db, r));
  return ids;
}

/** The row a freshly inserted task has (column defaults filled in), without reading it back. */
export function newTaskRow(id: number, t: NewTaskRow): TaskRow {
  // Object.assign, not a spread: `{ ...values, more fields }` made this 40x slower on V8 (40 µs
  // a row, a twentieth of a task's dispatch CPU when a batch of 1000 is created).
  return Object.assign(taskValues(t), {
    id,
    client_id: null,
    result: null,
    error_log: null,
    checkpoint_path: null,
    progress: 0,
    metrics: null,
    attempts: 0,
    unschedulable_reason: null,
    started_at: null,
    finished_at: null,
  }) as TaskRow;
}

export async function findTask(db: Db, id: number): Promise<TaskRow | undefined> {
  return db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Many tasks by id (missing ones are absent), in no particular order. */
export async function findTasks(db: Db, ids: readonly number[]): Promise<TaskRow[]> {
  const out: TaskRow[] = [];
  for (const part of chunks(ids)) {
    out.push(...(await db.selectFrom('tasks').selectAll().where('id', 'in', part).execute()));
  }
  return out;
}

export async function listTasks(db: Db, f: TaskFilter): Promise<{ rows: TaskRow[]; total: number }> {
  let q = db.selectFrom('tasks');
  if (f.status) q = q.where('status', '=', f.status);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.client_id) q = q.where('client_id', '=', f.client_id);
  if (f.created_by !== undefined) q = q.where('created_by', '=', f.created_by);
  if (f.owner !== undefined) q = q.where('owner', '=', f.owner);
  return pageOf(q, (page) => page.selectAll().orderBy('id', 'desc'), f);
}

/**
 * Changes a task only if it is still in one of `from`: the conditional update is what
 * keeps concurrent changes (two instances, a result racing a cancel) from both winning.
 */
export async function updateTaskIf(
  db: Db,
  id: number,
  from: readonly TaskStatus[],
  changes: UpdateObject<Database, 'tasks'>,
): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('tasks')
      .set(changes)
      .where('id', '=', id)
      .where('status', 'in', from as TaskStatus[]),
  );
}

/** A running or paused task's progress and latest metrics (no status change). */
export async function recordTaskProgress(
  db: Db,
  id: number,
  progress: number,
  metrics: unknown,
  at: string,
): Promise<void> {
  await db
    .updateTable('tasks')
    .set({ progress, metrics: JSON.stringify(metrics), updated_at: at })
    .where('id', '=', id)
    .where('status', 'in', ['running', 'paused'])
    .execute();
}

/** Every pending task (the dispatcher's queue at start). */
export async function listPendingTasks(db: Db): Promise<TaskRow[]> {
  return db.selectFrom('tasks').selectAll().where('status', '=', 'pending').execute();
}

/** The ids of the oldest `limit` pending tasks. */
export async function listPendingIds(db: Db, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom('tasks')
    .select('id')
    .where('status', '=', 'pending')
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** Notes why tasks cannot be placed (null: they can), one statement per ROWS_PER_STATEMENT tasks. */
export async function setUnschedulableReason(
  db: Db,
  ids: readonly number[],
  reason: string | null,
): Promise<void> {
  for (const part of chunks(ids)) {
    await db.updateTable('tasks').set({ unschedulable_reason: reason }).where('id', 'in', part).execute();
  }
}

/** Replaces a task's config (a training rewound to a checkpoint gets more rounds). */
export async function setTaskConfig(db: Db, id: number, config: string, at: string): Promise<void> {
  await db.updateTable('tasks').set({ config, updated_at: at }).where('id', '=', id).execute();
}

export async function deleteTask(db: Db, id: number): Promise<boolean> {
  const res = await db.deleteFrom('tasks').where('id', '=', id).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}

export async function countTasksByStatus(db: Db): Promise<Partial<Record<TaskStatus, number>>> {
  const rows = await db
    .selectFrom('tasks')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('status')
    .execute();
  const out: Partial<Record<TaskStatus, number>> = {};
  for (const r of rows) out[r.status] = Number(r.n);
  return out;
}

export interface NewTaskEvent {
  task_id: number;
  at: string;
  kind: string;
  message: string;
  data?: unknown;
}

export async function insertTaskEvent(db: Db, e: NewTaskEvent): Promise<void> {
  await db
    .insertInto('task_events')
    .values({
      task_id: e.task_id,
      at: e.at,
      kind: e.kind,
      message: e.message,
      data: e.data === undefined ? null : JSON.stringify(e.data),
    })
    .execute();
}

/** Many task events in multi-row INSERTs. */
export async function insertTaskEvents(db: Db, events: readonly NewTaskEvent[]): Promise<void> {
  await insertRows(
    db,
    'task_events',
    ['task_id', 'at', 'kind', 'message', 'data'],
    events.map((e) => [
      e.task_id,
      e.at,
      e.kind,
      e.message,
      e.data === undefined ? null : JSON.stringify(e.data),
    ]),
  );
}

/** The task's newest event of `kind`: its `at` column and raw data, or undefined. */
async function latestEvent(db: Db, taskId: number, kind: string) {
  return db
    .selectFrom('task_events')
    .select(['at', 'data'])
    .where('task_id', '=', taskId)
    .where('kind', '=', kind)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}

/** When the task's newest event of `kind` happened (the `at` column), or null. */
export async function latestEventAt(db: Db, taskId: number, kind: string): Promise<string | null> {
  const row = await latestEvent(db, taskId, kind);
  return row ? String(row.at) : null;
}

/** The data of the task's newest event of `kind` (parsed JSON), or null. */
export async function latestEventData(db: Db, taskId: number, kind: string): Promise<unknown> {
  const row = await latestEvent(db, taskId, kind);
  return row ? parseJson(row.data) : null;
}

export async function listTaskEvents(db: Db, taskId: number, limit: number, before?: number) {
  let q = db.selectFrom('task_events').selectAll().where('task_id', '=', taskId);
  if (before !== undefined) q = q.where('id', '<', before);
  return q.orderBy('id', 'desc').limit(limit).execute();
}
