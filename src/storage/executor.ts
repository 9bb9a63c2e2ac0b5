import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

/**
 * What every repository function runs its statements on: the database, or a transaction
 * opened on it. In Kysely 0.28 `Transaction<Database>` extends `Kysely<Database>`, so both are
 * one type and a caller inside a transaction passes it as it is, with no cast.
 */
export type Executor = Kysely<Database>;

/** Runs `fn` in one transaction of its own (committed when it resolves, rolled back when it throws). */
export function inTransaction<T>(db: Executor, fn: (trx: Executor) => Promise<T>): Promise<T> {
  return db.transaction().execute(fn);
}
