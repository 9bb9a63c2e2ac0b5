import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db.js';

/** Output lines of tasks as workers send them (task_log); the newest 2,000 per task are kept. */
const MYSQL = [
  `CREATE TABLE task_logs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    task_id INT NOT NULL,
    at DATETIME(3) NOT NULL,
    \`rank\` INT NOT NULL,
    attempt INT NOT NULL,
    line TEXT NOT NULL,
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE,
    INDEX idx_task_logs_task (task_id, id)
  ) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`,
];

const SQLITE = [
  `CREATE TABLE task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    rank INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line TEXT NOT NULL
  )`,
  `CREATE INDEX idx_task_logs_task ON task_logs (task_id, id)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  for (const stmt of dialect === 'mysql' ? MYSQL : SQLITE) await sql.raw(stmt).execute(db);
}
