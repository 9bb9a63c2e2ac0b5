import type { Executor } from './executor.js';
import { keepNewestOfTask, newestOfTask } from './task-history.js';

type Db = Executor;

/** Output lines kept per task; older ones are dropped. */
export const LOG_LINES_KEPT = 2000;

export async function insertLogLines(
  db: Db,
  rows: { task_id: number; at: string; rank: number; attempt: number; line: string }[],
): Promise<void> {
  if (rows.length > 0) await db.insertInto('task_logs').values(rows).execute();
}

/** The newest `limit` lines of a task, oldest first. */
export async function listLogLines(db: Db, taskId: number, limit: number) {
  return newestOfTask(db, 'task_logs', taskId, limit);
}

/** Keeps the newest LOG_LINES_KEPT lines of a task. */
export async function pruneLogLines(db: Db, taskId: number): Promise<void> {
  await keepNewestOfTask(db, 'task_logs', taskId, LOG_LINES_KEPT);
}
