import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';
import * as part from './sql-parts.js';

/**
 * Several server instances on one database: each instance's row and heartbeat, which
 * instance holds each client's socket (clients.instance_id), and which instance aggregates
 * each training task's rounds (training_owners). An instance whose heartbeat is older than
 * CONNECTION_TIMEOUT is dead: the others take over its clients' leases and its trainings.
 */
const MYSQL = [
  `CREATE TABLE server_instances (
    id VARCHAR(64) PRIMARY KEY,
    host VARCHAR(255) NOT NULL,
    pid INT NOT NULL,
    started_at DATETIME(3) NOT NULL,
    heartbeat_at DATETIME(3) NOT NULL,
    INDEX idx_server_instances_heartbeat (heartbeat_at)
  ) ${part.MYSQL_TABLE}`,
  `ALTER TABLE clients ADD COLUMN instance_id VARCHAR(64) NULL`,
  `CREATE INDEX idx_clients_instance ON clients (instance_id)`,
  `CREATE TABLE training_owners (
    task_id INT PRIMARY KEY,
    instance_id VARCHAR(64) NOT NULL,
    acquired_at DATETIME(3) NOT NULL,
    ${part.MYSQL_TASK_FK}
  ) ${part.MYSQL_TABLE}`,
];

const SQLITE = [
  `CREATE TABLE server_instances (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
  )`,
  `CREATE INDEX idx_server_instances_heartbeat ON server_instances (heartbeat_at)`,
  `ALTER TABLE clients ADD COLUMN instance_id TEXT NULL`,
  `CREATE INDEX idx_clients_instance ON clients (instance_id)`,
  `CREATE TABLE training_owners (
    task_id INTEGER PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    acquired_at TEXT NOT NULL
  )`,
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await part.runStatements(db, dialect === 'mysql' ? MYSQL : SQLITE);
}
