/**
 * Pieces of SQL every migration repeats, written once. A migration's statements must not change
 * once released (databases in the field have run them; SQLite even keeps each CREATE TABLE's
 * text): a piece here is only ever added, never edited.
 */
import { sql, type Kysely } from 'kysely';

/** MySQL: an auto-increment id column (INT, or BIGINT for history tables). */
export const MYSQL_ID = 'id INT AUTO_INCREMENT PRIMARY KEY';
export const MYSQL_BIG_ID = 'id BIGINT AUTO_INCREMENT PRIMARY KEY';
/** SQLite: an auto-increment id column. */
export const SQLITE_ID = 'id INTEGER PRIMARY KEY AUTOINCREMENT';

/** MySQL: the row goes with its task. */
export const MYSQL_TASK_FK = 'FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE';
/** SQLite: a task_id column whose row goes with its task. */
export const SQLITE_TASK_ID = 'task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE';

/** The leading columns of a log table (audit log, failed logins): its id and the time. */
export const MYSQL_LOG = `${MYSQL_BIG_ID},
    at DATETIME(3) NOT NULL`;
export const SQLITE_LOG = `${SQLITE_ID},
    at TEXT NOT NULL`;

/** The leading columns of a task's history table (events, metrics, output lines): id, task, time. */
export const MYSQL_TASK_HISTORY = `${MYSQL_BIG_ID},
    task_id INT NOT NULL,
    at DATETIME(3) NOT NULL`;
export const SQLITE_TASK_HISTORY = `${SQLITE_ID},
    ${SQLITE_TASK_ID},
    at TEXT NOT NULL`;

/** MySQL: what ends every CREATE TABLE but the case-sensitive ones. */
export const MYSQL_TABLE = 'CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci';

/** Runs a migration's statements, in order. */
export async function runStatements(db: Kysely<unknown>, statements: readonly string[]): Promise<void> {
  for (const stmt of statements) await sql.raw(stmt).execute(db);
}
