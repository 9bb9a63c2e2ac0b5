import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * Tasks belong to the identity that created them (issue 11, point 10): tasks.owner is
 * `token:<token id>` or `user:<user id>`, where tasks.created_by stays the name shown. A
 * name could be taken by another token; an identity cannot.
 *
 * Older tasks get an owner when their created_by names exactly one token and no panel user;
 * a name shared by several tokens (or by a token and a user) says nothing about which one
 * created the task, so those stay without an owner and only admins see them.
 */
const BACKFILL = (concat: string) => `UPDATE tasks SET owner = (
    SELECT ${concat} FROM api_tokens t WHERE t.name = tasks.created_by
  )
  WHERE owner IS NULL AND created_by IS NOT NULL
    AND (SELECT COUNT(*) FROM api_tokens t WHERE t.name = tasks.created_by) = 1
    AND NOT EXISTS (SELECT 1 FROM users u WHERE u.username = tasks.created_by)`;

const MYSQL = [
  `ALTER TABLE tasks ADD COLUMN owner VARCHAR(80) NULL`,
  `CREATE INDEX idx_tasks_owner ON tasks (owner)`,
  BACKFILL(`CONCAT('token:', MIN(t.id))`),
];

const SQLITE = [
  `ALTER TABLE tasks ADD COLUMN owner TEXT NULL`,
  `CREATE INDEX idx_tasks_owner ON tasks (owner)`,
  BACKFILL(`'token:' || MIN(t.id)`),
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
