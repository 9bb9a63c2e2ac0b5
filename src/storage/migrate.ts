import { Migrator, type Kysely, type Migration, type MigrationResultSet } from 'kysely';
import type { Dialect } from './db.js';
import type { Database } from './schema.js';
import * as m001 from './migrations/001-initial.js';
import * as m003 from './migrations/003-sessions.js';
import * as m004 from './migrations/004-training.js';
import * as m005 from './migrations/005-task-logs.js';
import * as m006 from './migrations/006-instances.js';
import * as m007 from './migrations/007-task-owner.js';
import * as m008 from './migrations/008-exact-client-ids.js';
import * as m009 from './migrations/009-code-registry.js';
import * as m011 from './migrations/011-resumable-uploads.js';
import * as m012 from './migrations/012-async-versions.js';
import * as m013 from './migrations/013-refused-late.js';

interface DialectMigration {
  up(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
}

/** Numbered migrations, in order. Only ever add to this list. */
const MIGRATIONS: Record<string, DialectMigration> = {
  '001-initial': m001,
  '003-sessions': m003,
  '004-training': m004,
  '005-task-logs': m005,
  '006-instances': m006,
  '007-task-owner': m007,
  '008-exact-client-ids': m008,
  '009-code-registry': m009,
  '011-resumable-uploads': m011,
  '012-async-versions': m012,
  '013-refused-late': m013,
};

/**
 * Brings the schema up to date (or up to and including `upTo`, for tests of a migration
 * over older rows); returns the names applied now.
 */
export async function migrateToLatest(
  db: Kysely<Database>,
  dialect: Dialect,
  upTo?: string,
): Promise<string[]> {
  const migrations: Record<string, Migration> = {};
  for (const [name, m] of Object.entries(MIGRATIONS)) {
    migrations[name] = { up: (d) => m.up(d, dialect) };
  }
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'ai_farm_migrations',
    migrationLockTableName: 'ai_farm_migrations_lock',
    // Numbers are reserved per feature and may land out of order (003 before 002); each
    // migration touches its own tables, so a late lower number is applied, not refused.
    allowUnorderedMigrations: true,
  });
  const { error, results }: MigrationResultSet = await (upTo
    ? migrator.migrateTo(upTo)
    : migrator.migrateToLatest());
  if (error) throw error;
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
