import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * Admin-panel sessions and failed logins. Both live in the database (not in memory) so
 * that several server instances behind one address share logins and throttling.
 */
const MYSQL = [
  `CREATE TABLE sessions (
    id CHAR(64) PRIMARY KEY,
    user_id INT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    last_seen_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    absolute_expires_at DATETIME(3) NOT NULL,
    ip VARCHAR(64) NULL,
    user_agent VARCHAR(255) NULL,
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE,
    INDEX idx_sessions_user (user_id),
    INDEX idx_sessions_expires (expires_at)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE login_failures (
    ${part.MYSQL_LOG},
    ip VARCHAR(64) NOT NULL,
    username VARCHAR(255) NOT NULL,
    INDEX idx_login_failures_ip (ip, at),
    INDEX idx_login_failures_user (username, at),
    INDEX idx_login_failures_at (at)
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    absolute_expires_at TEXT NOT NULL,
    ip TEXT NULL,
    user_agent TEXT NULL
  )`,
  `CREATE INDEX idx_sessions_user ON sessions (user_id)`,
  `CREATE INDEX idx_sessions_expires ON sessions (expires_at)`,
  `CREATE TABLE login_failures (
    ${part.SQLITE_LOG},
    ip TEXT NOT NULL,
    username TEXT NOT NULL
  )`,
  `CREATE INDEX idx_login_failures_ip ON login_failures (ip, at)`,
  `CREATE INDEX idx_login_failures_user ON login_failures (username, at)`,
  `CREATE INDEX idx_login_failures_at ON login_failures (at)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
