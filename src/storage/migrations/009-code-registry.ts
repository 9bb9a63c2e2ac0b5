import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * Code shipped with tasks: content-addressed blobs (`code_bundles`: a single file or the
 * tar.gz of a folder, stored under MODEL_CACHE_DIR by sha256), the model registry's named,
 * immutable versions of them (`model_versions`), and which tasks use which (`task_code`), so
 * a version a live task uses can be refused for deletion and the panel can list its tasks.
 */
const MYSQL = [
  `CREATE TABLE code_bundles (
    digest VARCHAR(71) PRIMARY KEY,
    kind VARCHAR(16) NOT NULL,
    size BIGINT NOT NULL,
    entries INT NOT NULL,
    created_by VARCHAR(255) NULL,
    created_at DATETIME(3) NOT NULL
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE model_versions (
    name VARCHAR(128) NOT NULL,
    version VARCHAR(64) NOT NULL,
    digest VARCHAR(71) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    size BIGINT NOT NULL,
    file_name VARCHAR(255) NULL,
    created_by VARCHAR(255) NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (name, version),
    INDEX idx_model_versions_digest (digest)
  ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
  `CREATE TABLE task_code (
    task_id INT PRIMARY KEY,
    digest VARCHAR(71) NOT NULL,
    model VARCHAR(193) NULL,
    INDEX idx_task_code_digest (digest),
    INDEX idx_task_code_model (model),
    ${part.MYSQL_TASK_FK}
  ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
];

const SQLITE = [
  `CREATE TABLE code_bundles (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    created_by TEXT NULL,
    created_at TEXT NOT NULL
  )`,
  `CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    file_name TEXT NULL,
    created_by TEXT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
  )`,
  `CREATE INDEX idx_model_versions_digest ON model_versions (digest)`,
  `CREATE TABLE task_code (
    task_id INTEGER PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    model TEXT NULL
  )`,
  `CREATE INDEX idx_task_code_digest ON task_code (digest)`,
  `CREATE INDEX idx_task_code_model ON task_code (model)`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
