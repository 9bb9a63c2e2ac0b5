import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/** Output lines of tasks as workers send them (task_log); the newest 2,000 per task are kept. */
const MYSQL = [
  `CREATE TABLE task_logs (
    ${part.MYSQL_TASK_HISTORY},
    \`rank\` INT NOT NULL,
    attempt INT NOT NULL,
    line TEXT NOT NULL,
    ${part.MYSQL_TASK_FK},
    INDEX idx_task_logs_task (task_id, id)
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE task_logs (
    ${part.SQLITE_TASK_HISTORY},
    rank INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line TEXT NOT NULL
  )`,
  `CREATE INDEX idx_task_logs_task ON task_logs (task_id, id)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
