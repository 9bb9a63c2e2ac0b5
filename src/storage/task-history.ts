import type { Selectable } from 'kysely';
import type { Executor } from './executor.js';
import type { Database } from './schema.js';

type Db = Executor;

/** Per-task append-only tables, bounded to their newest rows: metric samples and output lines. */
export type HistoryTable = 'task_metrics' | 'task_logs';

/** The newest `limit` rows of a task, oldest first. */
export async function newestOfTask<T extends HistoryTable>(
  db: Db,
  table: T,
  taskId: number,
  limit: number,
): Promise<Selectable<Database[T]>[]> {
  // Both tables have id and task_id; Kysely cannot type a union of table names, hence the cast.
  const rows = await db
    .selectFrom(table as 'task_metrics')
    .selectAll()
    .where('task_id', '=', taskId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows.reverse() as unknown as Selectable<Database[T]>[];
}

/** Keeps the newest `keep` rows of a task, dropping the older ones. */
export async function keepNewestOfTask(
  db: Db,
  table: HistoryTable,
  taskId: number,
  keep: number,
): Promise<void> {
  const t = table as 'task_metrics';
  const cutoff = await db
    .selectFrom(t)
    .select('id')
    .where('task_id', '=', taskId)
    .orderBy('id', 'desc')
    .offset(keep)
    .limit(1)
    .executeTakeFirst();
  if (cutoff) await db.deleteFrom(t).where('task_id', '=', taskId).where('id', '<=', cutoff.id).execute();
}
