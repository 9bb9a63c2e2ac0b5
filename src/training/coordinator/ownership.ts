/**
 * Training with several server instances: one instance (the owner, recorded in
 * training_owners) aggregates each task's rounds; the others accept uploads, journal them and
 * tell the owner, which folds them in from disk. Updates are counted in the round's row
 * (num_updates) in the transaction that journals them, so a close that did not see every
 * journaled update cannot commit (see closeRound).
 */
import type { Kysely, Transaction } from 'kysely';
import { sql } from 'kysely';
import { LIVE_ASSIGNMENT } from '../../storage/assignment-repo.js';
import type { AssignmentStatus, Database, RoundUpdatesTable } from '../../storage/schema.js';
import { insertUpdate } from '../../storage/training-repo.js';

type Db = Kysely<Database> | Transaction<Database>;

/** The lease of a client whose socket another instance holds, read from the database. */
export interface RemoteLease {
  tokenId: string | null;
  rank: number;
  attempt: number;
}

/** Who aggregates a task's rounds (implemented by src/cluster; absent on a lone instance). */
export interface TrainingOwnership {
  /** True when this instance owns the task: already, now (no owner), or by taking over a dead owner's. */
  acquire(taskId: number): Promise<boolean>;
  /** True while this instance still owns the task (checked in the transaction that closes a round). */
  holds(db: Db, taskId: number): Promise<boolean>;
}

/**
 * Journals an accepted update only while its round is open, counting it in the round's row.
 * False when the round is no longer open (closed meanwhile, perhaps by another instance).
 */
export async function journalUpdate(
  trx: Transaction<Database>,
  u: Omit<RoundUpdatesTable, 'id' | 'metrics'> & { metrics: string | null },
): Promise<boolean> {
  // The row lock taken here orders this insert against a concurrent close of the round.
  const res = await trx
    .updateTable('training_rounds')
    .set({ num_updates: sql<number>`num_updates + 1` })
    .where('task_id', '=', u.task_id)
    .where('round', '=', u.round)
    .where('state', '=', 'open')
    .executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0) return false;
  await insertUpdate(trx, u);
  return true;
}

/** Makes an open round's counter agree with its journal (rounds opened before migration 006). */
export async function repairCount(db: Db, taskId: number, round: number, count: number): Promise<void> {
  await db
    .updateTable('training_rounds')
    .set({ num_updates: count })
    .where('task_id', '=', taskId)
    .where('round', '=', round)
    .where('state', '=', 'open')
    .where('num_updates', '<>', count)
    .execute();
}

/** The live leases on a task's ranks, wherever their clients are connected. */
export async function liveRanks(
  db: Db,
  taskId: number,
): Promise<{ client_id: string; rank: number; attempt: number }[]> {
  const rows = await db
    .selectFrom('task_assignments')
    .select(['client_id', 'rank', 'attempt'])
    .where('task_id', '=', taskId)
    .where('status', 'in', LIVE_ASSIGNMENT as AssignmentStatus[])
    .execute();
  return rows.map((r) => ({ client_id: r.client_id, rank: Number(r.rank), attempt: Number(r.attempt) }));
}
