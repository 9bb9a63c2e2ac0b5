import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * The round journal of distributed training: one row per round (its state, deadline and the
 * global model it starts from) and one row per accepted update. The running FedAvg sum is a
 * cache of this journal: after a restart it is rebuilt from the accepted update files of the
 * open round, each counted once (the unique key makes a second acceptance impossible).
 */
const MYSQL = [
  `CREATE TABLE training_rounds (
    ${part.MYSQL_ID},
    task_id INT NOT NULL,
    round INT NOT NULL,
    state ENUM('open', 'closed') NOT NULL,
    opened_at DATETIME(3) NOT NULL,
    deadline_at DATETIME(3) NOT NULL,
    closed_at DATETIME(3) NULL,
    global_path VARCHAR(1024) NULL,
    global_digest CHAR(64) NULL,
    num_updates INT NOT NULL DEFAULT 0,
    extensions INT NOT NULL DEFAULT 0,
    metrics JSON NULL,
    ${part.MYSQL_TASK_FK},
    UNIQUE KEY uq_training_round (task_id, round),
    INDEX idx_training_rounds_state (state)
  ) ${part.MYSQL_TABLE}`,
  `CREATE TABLE round_updates (
    ${part.MYSQL_ID},
    task_id INT NOT NULL,
    round INT NOT NULL,
    \`rank\` INT NOT NULL,
    attempt INT NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    num_samples DOUBLE NOT NULL,
    path VARCHAR(1024) NOT NULL,
    digest CHAR(64) NOT NULL,
    bytes BIGINT NOT NULL,
    metrics JSON NULL,
    accepted_at DATETIME(3) NOT NULL,
    ${part.MYSQL_TASK_FK},
    UNIQUE KEY uq_round_update (task_id, round, \`rank\`)
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE training_rounds (
    ${part.SQLITE_ID},
    ${part.SQLITE_TASK_ID},
    round INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    opened_at TEXT NOT NULL,
    deadline_at TEXT NOT NULL,
    closed_at TEXT NULL,
    global_path TEXT NULL,
    global_digest TEXT NULL,
    num_updates INTEGER NOT NULL DEFAULT 0,
    extensions INTEGER NOT NULL DEFAULT 0,
    metrics TEXT NULL,
    UNIQUE (task_id, round)
  )`,
  `CREATE INDEX idx_training_rounds_state ON training_rounds (state)`,
  `CREATE TABLE round_updates (
    ${part.SQLITE_ID},
    ${part.SQLITE_TASK_ID},
    round INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    num_samples REAL NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    metrics TEXT NULL,
    accepted_at TEXT NOT NULL,
    UNIQUE (task_id, round, rank)
  )`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
