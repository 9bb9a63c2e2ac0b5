import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { afterAll, beforeAll } from 'vitest';
import {
  openDatabase,
  resolveDatabaseTarget,
  type DatabaseHandle,
  type Dialect,
} from '../../src/storage/db.js';
import { migrateToLatest } from '../../src/storage/migrate.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { Insertable } from 'kysely';
import type { ClientsTable } from '../../src/storage/schema.js';
import type { NewTaskRow } from '../../src/storage/task-repo.js';
import { WriteQueue } from '../../src/storage/write-queue.js';

/** The MariaDB server tests use; CI starts it (scripts/ensure-services.sh). */
export const TEST_MYSQL_URL = process.env.AI_FARM_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';

/** Every storage-touching suite runs once per dialect. */
export const DIALECTS: readonly Dialect[] = ['sqlite', 'mysql'];

export interface TestDatabase {
  dialect: Dialect;
  /** DATABASE_URL for the server under test. */
  url: string;
  /** A scratch folder for DATA_DIR, LOG_DIR and friends. */
  dir: string;
  drop(): Promise<void>;
}

/** A fresh, empty database of its own: a SQLite file, or a MariaDB database with a random name. */
export async function createTestDatabase(dialect: Dialect): Promise<TestDatabase> {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-test-'));
  if (dialect === 'sqlite') {
    return {
      dialect,
      url: join(dir, 'test.sqlite'),
      dir,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const name = `aifarm_t_${randomBytes(5).toString('hex')}`;
  return {
    dialect,
    url: `${TEST_MYSQL_URL.replace(/\/$/, '')}/${name}`,
    dir,
    drop: async () => {
      const conn = await createConnection(TEST_MYSQL_URL);
      try {
        await conn.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await conn.end();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh database of `dialect`, opened and migrated (`applied`: the migrations it ran). */
export async function openMigratedTestDatabase(
  dialect: Dialect,
): Promise<{ tdb: TestDatabase; h: DatabaseHandle; applied: string[]; close(): Promise<void> }> {
  const tdb = await createTestDatabase(dialect);
  const h = await openDatabase(
    resolveDatabaseTarget({ DATABASE_URL: tdb.url, db_config: null, DATA_DIR: tdb.dir }),
  );
  const applied = await migrateToLatest(h.db, h.dialect);
  return {
    tdb,
    h,
    applied,
    close: async () => {
      await h.close();
      await tdb.drop();
    },
  };
}

/**
 * A migrated database for the tests of one describe block: opened before the first, closed
 * after the last. Read `db` inside the tests (it exists once they run).
 */
export function migratedPerDescribe(dialect: Dialect): { readonly db: DatabaseHandle['db'] } {
  let opened: Awaited<ReturnType<typeof openMigratedTestDatabase>> | undefined;
  beforeAll(async () => {
    opened = await openMigratedTestDatabase(dialect);
  });
  afterAll(async () => opened?.close());
  return {
    get db() {
      if (!opened) throw new Error('the database opens before the first test');
      return opened.h.db;
    },
  };
}

/**
 * {@link openMigratedTestDatabase} with a group-commit WriteQueue on it, for code that writes
 * through one (claims, heartbeats, results); `close` ends the queue first.
 */
export async function openTestDatabaseWithWrites(
  dialect: Dialect,
): Promise<Awaited<ReturnType<typeof openMigratedTestDatabase>> & { writes: WriteQueue }> {
  const db = await openMigratedTestDatabase(dialect);
  const writes = new WriteQueue(db.h.db, silentLogger());
  return {
    ...db,
    writes,
    close: async () => {
      await writes.close();
      await db.close();
    },
  };
}

/** A task row for insertTasks in storage-level tests: a one-rank `noop` by alice, with `over` on top. */
export const taskRow = (over: Partial<NewTaskRow> = {}): NewTaskRow => ({
  type: 'noop',
  name: null,
  requirements: '{}',
  config: null,
  priority: 0,
  max_attempts: 3,
  world_size: 1,
  created_by: 'alice',
  now: '2030-01-02 03:04:05',
  ...over,
});

/**
 * A client row for upsertClient in storage-level tests: connected and active through
 * `instance_id`, seen at `at`, reporting nothing about itself, with `over` on top.
 */
export const connectedClientRow = (
  id: string,
  instance_id: string,
  at: string,
  over: Partial<Insertable<ClientsTable>> = {},
): Insertable<ClientsTable> & { id: string } => ({
  id,
  cpu_info: '{}',
  ram_info: '{}',
  gpu_info: null,
  session_info: null,
  hostname: null,
  token_id: null,
  connected: 1,
  status: 'active',
  last_seen: at,
  registered_at: at,
  utilization: null,
  instance_id,
  ...over,
});
