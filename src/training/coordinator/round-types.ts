/**
 * The types around a Round (round.ts): its phase, an update on its way in, what it needs.
 */
import type { Kysely } from 'kysely';
import type { Bus } from '../../bus/bus.js';
import type { Database } from '../../storage/schema.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { TrainingConfig } from '../training-config.js';
import type { CloseDeps } from './close-round.js';
import type { Ranks } from './ranks.js';
import type { SampledRound } from './resample.js';
import type { AcceptedUpdate } from './run.js';

/** Deadlines passed below quorum before a round (and its task) fails. */
export const MAX_EXTENSIONS = 3;

/** Where a round is. */
export type RoundPhase =
  /**
   * Another instance owns the task's rounds: this is a fresh read of the journal for one upload
   * or one `task` message. It holds no sum and no timer; what it accepts, the owner folds in.
   */
  | { kind: 'following' }
  /** Read from the journal, not started yet (begin()). */
  | { kind: 'loading' }
  /** Taking updates; `timer` fires at the deadline. */
  | { kind: 'open'; timer: NodeJS.Timeout }
  /** The task is paused: the deadline stands still with the time it had left. */
  | { kind: 'paused'; leftMs: number }
  /** Aggregating; no more updates. `paused`: the task was paused meanwhile. */
  | { kind: 'closing'; paused: boolean }
  /** Finished, failed, cancelled or dropped: late events are ignored. */
  | { kind: 'ended' };

/** What a round starts from (a row of the journal, read by load-round.ts). */
export interface RoundStart {
  taskId: number;
  type: string;
  config: TrainingConfig;
  worldSize: number;
  number: number;
  deadlineAt: Date;
  extensions: number;
  globalPath: string | null;
  globalDigest: string | null;
  reference: SafetensorsHeader | null;
  following: boolean;
}

/** An update on its way into a round. */
export interface Incoming {
  round: number;
  rank: number;
  clientId: string;
  header: SafetensorsHeader;
  /** Checks what the round cannot know (the client still holds the lease); throws to refuse. */
  check(): Promise<void>;
  /** Puts the update's file in place; answers the update to journal (the same again when an async update is offered to the next buffer). */
  place(): Promise<AcceptedUpdate>;
}

export interface RoundDeps extends CloseDeps {
  db: Kysely<Database>;
  bus: Bus;
  ranks: Ranks;
  /** Called with a finished task (e.g. TorchServe registration); errors are logged. */
  onComplete?: (taskId: number, modelPath: string, digest: string) => Promise<void>;
  /** True once the coordinator stops (adds cut short by it are not worth an error). */
  stopping: () => boolean;
  /**
   * A sampled task's round opens (resample.ts): samples its clients, hands the ranks over and
   * tells them; false when the task samples nothing (the round tells every rank). Never throws.
   */
  resample?: (round: SampledRound) => Promise<boolean>;
}
