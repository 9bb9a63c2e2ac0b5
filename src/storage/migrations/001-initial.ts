import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * The seed's three tables exactly as written there (MySQL), with AI Farm's columns
 * appended and the status enums extended (the seed's values come first, unchanged),
 * plus tokens, users, task events, metric history and the audit log.
 */
const MYSQL = [
  `CREATE TABLE tasks (
    ${part.MYSQL_ID},
    type VARCHAR(255) NOT NULL,
    requirements JSON NOT NULL,
    status ENUM('pending', 'running', 'completed', 'failed', 'error', 'paused', 'cancelled') NOT NULL,
    client_id VARCHAR(255),
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    result JSON,
    error_log TEXT,
    priority INT DEFAULT 0,
    config JSON,
    checkpoint_path VARCHAR(255),
    name VARCHAR(255) NULL,
    created_by VARCHAR(64) NULL,
    progress DOUBLE NOT NULL DEFAULT 0,
    metrics JSON NULL,
    attempts INT NOT NULL DEFAULT 0,
    max_attempts INT NOT NULL DEFAULT 3,
    world_size INT NOT NULL DEFAULT 1,
    unschedulable_reason TEXT NULL,
    started_at DATETIME NULL,
    finished_at DATETIME NULL,
    INDEX idx_tasks_status_priority (status, priority, id),
    INDEX idx_tasks_created_by (created_by),
    INDEX idx_tasks_type (type)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE task_assignments (
    ${part.MYSQL_ID},
    task_id INT NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    assigned_at DATETIME NOT NULL,
    status ENUM('assigned', 'training', 'completed', 'failed', 'paused', 'lost', 'cancelled') NOT NULL,
    \`rank\` INT NOT NULL,
    checkpoint_path VARCHAR(255),
    attempt INT NOT NULL DEFAULT 1,
    progress DOUBLE NOT NULL DEFAULT 0,
    updated_at DATETIME NOT NULL,
    finished_at DATETIME NULL,
    error TEXT NULL,
    ${part.MYSQL_TASK_FK},
    INDEX idx_assign_client_status (client_id, status),
    UNIQUE KEY uq_assign_attempt (task_id, \`rank\`, attempt)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE clients (
    id VARCHAR(255) PRIMARY KEY,
    cpu_info JSON NOT NULL,
    ram_info JSON NOT NULL,
    gpu_info JSON,
    session_info JSON,
    last_seen DATETIME NOT NULL,
    status ENUM('active', 'inactive') NOT NULL,
    hostname VARCHAR(255) NULL,
    token_id VARCHAR(64) NULL,
    connected TINYINT NOT NULL DEFAULT 0,
    cordoned TINYINT NOT NULL DEFAULT 0,
    registered_at DATETIME NOT NULL,
    utilization JSON NULL
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE api_tokens (
    id VARCHAR(64) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    role ENUM('admin', 'user', 'worker') NOT NULL,
    token_hash CHAR(64) NOT NULL UNIQUE,
    created_at DATETIME(3) NOT NULL,
    created_by VARCHAR(64) NULL,
    last_used_at DATETIME(3) NULL,
    revoked_at DATETIME(3) NULL
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE users (
    ${part.MYSQL_ID},
    username VARCHAR(255) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    role ENUM('admin') NOT NULL,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE task_events (
    ${part.MYSQL_TASK_HISTORY},
    kind VARCHAR(64) NOT NULL,
    message TEXT NOT NULL,
    data JSON NULL,
    ${part.MYSQL_TASK_FK},
    INDEX idx_events_task (task_id, id)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE task_metrics (
    ${part.MYSQL_TASK_HISTORY},
    \`rank\` INT NOT NULL,
    attempt INT NOT NULL,
    round INT NULL,
    progress DOUBLE NOT NULL,
    metrics JSON NOT NULL,
    ${part.MYSQL_TASK_FK},
    INDEX idx_metrics_task (task_id, id)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE audit_log (
    ${part.MYSQL_LOG},
    actor VARCHAR(255) NOT NULL,
    action VARCHAR(64) NOT NULL,
    target VARCHAR(255) NOT NULL,
    detail JSON NULL,
    INDEX idx_audit_at (at)
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE tasks (
    ${part.SQLITE_ID},
    type TEXT NOT NULL,
    requirements TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'error', 'paused', 'cancelled')),
    client_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    result TEXT,
    error_log TEXT,
    priority INTEGER DEFAULT 0,
    config TEXT,
    checkpoint_path TEXT,
    name TEXT NULL,
    created_by TEXT NULL,
    progress REAL NOT NULL DEFAULT 0,
    metrics TEXT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    world_size INTEGER NOT NULL DEFAULT 1,
    unschedulable_reason TEXT NULL,
    started_at TEXT NULL,
    finished_at TEXT NULL
  )`,
  `CREATE INDEX idx_tasks_status_priority ON tasks (status, priority, id)`,
  `CREATE INDEX idx_tasks_created_by ON tasks (created_by)`,
  `CREATE INDEX idx_tasks_type ON tasks (type)`,
  `CREATE TABLE task_assignments (
    ${part.SQLITE_ID},
    ${part.SQLITE_TASK_ID},
    client_id TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('assigned', 'training', 'completed', 'failed', 'paused', 'lost', 'cancelled')),
    rank INTEGER NOT NULL,
    checkpoint_path TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    progress REAL NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    finished_at TEXT NULL,
    error TEXT NULL,
    UNIQUE (task_id, rank, attempt)
  )`,
  `CREATE INDEX idx_assign_client_status ON task_assignments (client_id, status)`,
  `CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    cpu_info TEXT NOT NULL,
    ram_info TEXT NOT NULL,
    gpu_info TEXT,
    session_info TEXT,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    hostname TEXT NULL,
    token_id TEXT NULL,
    connected INTEGER NOT NULL DEFAULT 0,
    cordoned INTEGER NOT NULL DEFAULT 0,
    registered_at TEXT NOT NULL,
    utilization TEXT NULL
  )`,
  `CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user', 'worker')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NULL,
    last_used_at TEXT NULL,
    revoked_at TEXT NULL
  )`,
  `CREATE TABLE users (
    ${part.SQLITE_ID},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  )`,
  `CREATE TABLE task_events (
    ${part.SQLITE_TASK_HISTORY},
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NULL
  )`,
  `CREATE INDEX idx_events_task ON task_events (task_id, id)`,
  `CREATE TABLE task_metrics (
    ${part.SQLITE_TASK_HISTORY},
    rank INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    round INTEGER NULL,
    progress REAL NOT NULL,
    metrics TEXT NOT NULL
  )`,
  `CREATE INDEX idx_metrics_task ON task_metrics (task_id, id)`,
  `CREATE TABLE audit_log (
    ${part.SQLITE_LOG},
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NULL
  )`,
  `CREATE INDEX idx_audit_at ON audit_log (at)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
