import type { Kysely, Selectable, Transaction, UpdateObject } from 'kysely';
import type { Database, TaskStatus, TasksTable } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;
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
  now: string;
}

export interface TaskFilter {
  status?: TaskStatus | undefined;
  type?: string | undefined;
  client_id?: string | undefined;
  created_by?: string | undefined;
  limit: number;
  offset: number;
}

export async function insertTask(db: Db, t: NewTaskRow): Promise<number> {
  const res = await db
    .insertInto('tasks')
    .values({
      type: t.type,
      name: t.name,
      requirements: t.requirements,
      config: t.config,
      priority: t.priority,
      max_attempts: t.max_attempts,
      world_size: t.world_size,
      created_by: t.created_by,
      status: 'pending',
      created_at: t.now,
      updated_at: t.now,
    })
    .executeTakeFirstOrThrow();
  return Number(res.insertId);
}

export async function findTask(db: Db, id: number): Promise<TaskRow | undefined> {
  return db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listTasks(db: Db, f: TaskFilter): Promise<{ rows: TaskRow[]; total: number }> {
  let q = db.selectFrom('tasks');
  if (f.status) q = q.where('status', '=', f.status);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.client_id) q = q.where('client_id', '=', f.client_id);
  if (f.created_by !== undefined) q = q.where('created_by', '=', f.created_by);
  const [rows, count] = await Promise.all([
    q.selectAll().orderBy('id', 'desc').limit(f.limit).offset(f.offset).execute(),
    q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.n) };
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
  const res = await db
    .updateTable('tasks')
    .set(changes)
    .where('id', '=', id)
    .where('status', 'in', from as TaskStatus[])
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
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

export async function insertTaskEvent(
  db: Db,
  e: { task_id: number; at: string; kind: string; message: string; data?: unknown },
): Promise<void> {
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

export async function listTaskEvents(db: Db, taskId: number, limit: number) {
  return db
    .selectFrom('task_events')
    .selectAll()
    .where('task_id', '=', taskId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}
