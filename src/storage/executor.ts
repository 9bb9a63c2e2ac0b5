import { setTimeout as delay } from 'node:timers/promises';
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

/**
 * A transaction the database rolled back whole so that another could go on: MariaDB's
 * deadlock victim (ER_LOCK_DEADLOCK, 1213) or SQLite's busy database. Running it again is the
 * documented answer to both. (A lock-wait timeout, 1205, is not: it rolls back one statement
 * only, after 50 s, and a second wait would only double that.)
 */
export function isRolledBackForAnother(err: unknown): boolean {
  const e = err as { errno?: unknown; code?: unknown } | null;
  return e?.errno === 1213 || e?.code === 'ER_LOCK_DEADLOCK' || e?.code === 'SQLITE_BUSY';
}

/**
 * A write refused by a unique key (MariaDB's ER_DUP_ENTRY, 1062; SQLite's unique constraint):
 * another transaction wrote the same key first. For a claim, a lost race, not a fault.
 */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { errno?: unknown; code?: unknown } | null;
  return e?.errno === 1062 || e?.code === 'ER_DUP_ENTRY' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** Tries in all for a transaction chosen as a deadlock's victim again and again. */
export const DEADLOCK_TRIES = 5;

/**
 * `inTransaction`, run again (after a short random pause) while the database rolls it back
 * for another transaction (`isRolledBackForAnother`), up to DEADLOCK_TRIES in all. `fn` must
 * have no effect outside the transaction: it may run more than once.
 */
export async function inRetriedTransaction<T>(
  db: Executor,
  fn: (trx: Executor) => Promise<T>,
  tries = DEADLOCK_TRIES,
): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await db.transaction().execute(fn);
    } catch (err) {
      if (i >= tries || !isRolledBackForAnother(err)) throw err;
      // Apart, so the two sides of the deadlock do not meet again at once.
      await delay(Math.random() * 10 * 2 ** i);
    }
  }
}
