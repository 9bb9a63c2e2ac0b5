/**
 * Training with several server instances: one instance (the owner, recorded in
 * training_owners) aggregates each task's rounds; the others accept uploads, journal them and
 * tell the owner, which folds them in from disk. Updates are counted in the round's row
 * (num_updates) in the transaction that journals them, so a close that did not see every
 * journaled update cannot commit (see closeRound).
 */
import type { Executor } from '../../storage/executor.js';

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
  holds(db: Executor, taskId: number): Promise<boolean>;
}

export { journalUpdate, liveRanks, repairCount } from '../../storage/training-repo.js';
