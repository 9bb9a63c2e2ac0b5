import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * Resumable (tus) uploads of round updates: one row per upload created and not yet finished,
 * with what has been received so far, so a restarted server resumes it where it stopped.
 * `received` bytes are on disk at `path` (fsynced before the row says so); `piece_digests`
 * holds the sha256 of every whole 4 MiB piece among them, packed (safetensors/digest.ts), so
 * the digest continues without reading the file again. Times are epoch milliseconds.
 */
const MYSQL = [
  `CREATE TABLE update_uploads (
    id VARCHAR(64) PRIMARY KEY,
    task_id INT NOT NULL,
    round INT NOT NULL,
    \`rank\` INT NOT NULL,
    attempt INT NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    token_id VARCHAR(255) NOT NULL,
    num_samples DOUBLE NOT NULL,
    metrics TEXT NULL,
    length BIGINT NOT NULL,
    received BIGINT NOT NULL,
    piece_digests MEDIUMBLOB NOT NULL,
    path VARCHAR(1024) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ${part.MYSQL_TASK_FK},
    INDEX idx_update_uploads_expires (expires_at)
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE update_uploads (
    id TEXT PRIMARY KEY,
    ${part.SQLITE_TASK_ID},
    round INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    num_samples REAL NOT NULL,
    metrics TEXT NULL,
    length INTEGER NOT NULL,
    received INTEGER NOT NULL,
    piece_digests BLOB NOT NULL,
    path TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  )`,
  `CREATE INDEX idx_update_uploads_expires ON update_uploads (expires_at)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
