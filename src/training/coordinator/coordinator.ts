import { rm } from 'node:fs/promises';
import type { Kysely } from 'kysely';
import type { TrainingData } from '../../api/protocol.js';
import type { Bus, TaskIntent } from '../../bus/bus.js';
import type { ClientRegistry, Lease } from '../../clients/registry.js';
import type { Database } from '../../storage/schema.js';
import * as journal from '../../storage/training-repo.js';
import type { FarmView } from '../../scheduling/across.js';
import { isTrainingConfig } from '../training-config.js';
import type { CloseDeps } from './close-round.js';
import { loadRound } from './load-round.js';
import type { TrainingOwnership } from './ownership.js';
import { Ranks } from './ranks.js';
import { openSampledRound, resumeSample, type ResampleDeps } from './resample.js';
import { Round } from './round.js';
import type { RoundDeps } from './round-types.js';

export type { RemoteLease, TrainingOwnership } from './ownership.js';
export { MAX_EXTENSIONS } from './round-types.js';

export interface CoordinatorDeps extends CloseDeps {
  db: Kysely<Database>;
  registry: ClientRegistry;
  bus: Bus;
  /** Called with a finished task (e.g. TorchServe registration); errors are logged. */
  onComplete?: (taskId: number, modelPath: string, digest: string) => Promise<void>;
  /** Several instances share the database: who aggregates which task (src/cluster). */
  ownership?: TrainingOwnership;
  /** The other instances' clients, sampled too by sampled tasks (src/cluster). */
  farm?: FarmView;
  /** MAX_TASKS_PER_CLIENT: a client's free slots, for sampled rounds. */
  maxTasksPerClient?: number;
}

/**
 * Runs the rounds of every training task this server holds: finds a task's open Round (loading
 * it from the journal, opening round 1 the first time a rank is placed), routes intents and
 * other instances' updates to it, and forgets it when it ends. What happens in a round (updates,
 * deadline, close) is the Round's (round.ts).
 */
export class RoundCoordinator {
  private readonly rounds = new Map<number, Round>();
  private readonly locks = new Map<number, Promise<unknown>>();
  private readonly unsubscribes: (() => void)[] = [];
  private release: ((lease: Lease, reason: string) => Promise<void>) | null = null;
  private stopped = false;
  private readonly roundDeps: RoundDeps;

  constructor(private readonly d: CoordinatorDeps) {
    const ranks = new Ranks({ ...d, release: () => this.release });
    this.roundDeps = {
      ...d,
      ranks,
      stopping: () => this.stopped,
      resample: (round) =>
        openSampledRound(this.sampleDeps(ranks), round).catch((err: unknown) => {
          d.logger.error({ err, taskId: round.taskId, round: round.number }, 'sampling a round failed');
          return false;
        }),
    };
  }

  private sampleDeps(ranks: Ranks): ResampleDeps {
    return { ...this.d, ranks, farm: this.d.farm, maxTasksPerClient: this.d.maxTasksPerClient ?? 1 };
  }

  /** How a rank that missed a deadline is given up (LeaseService.releaseLease; set by the farm). */
  releaseRanksWith(release: (lease: Lease, reason: string) => Promise<void>): void {
    this.release = release;
  }

  /** Listens for intents (and other instances' updates), then resumes every open round from the journal. */
  async start(): Promise<void> {
    this.unsubscribes.push(this.d.bus.subscribe('task.control', (m) => this.control(m.task_id, m.action)));
    if (this.d.ownership) {
      // Another instance journaled an update of a round this instance owns.
      this.unsubscribes.push(
        this.d.bus.subscribe('training.update', (m) => {
          const round = this.rounds.get(m.task_id);
          if (!round || round.number !== m.round) return;
          void round
            .sync()
            .catch((err: unknown) =>
              this.d.logger.error({ err, taskId: m.task_id }, 'folding in a journaled update failed'),
            );
        }),
      );
    }
    for (const r of await journal.listOpenRounds(this.d.db)) {
      await this.withLock(r.task_id, () => this.ensure(r.task_id)).catch((err: unknown) =>
        this.d.logger.error({ err, taskId: r.task_id }, 'resuming a training task failed'),
      );
    }
  }

  /** Stops timers and threads; the journal already holds everything. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const u of this.unsubscribes.splice(0)) u();
    await Promise.all([...this.locks.values()].map((p) => p.catch(() => undefined)));
    for (const id of [...this.rounds.keys()]) this.drop(id);
  }

  /** TrainingHook: the round a rank joins; opens round 1 the first time. Never throws. */
  async describeTraining(
    taskId: number,
    config: Record<string, unknown> | null,
    rank: number,
    attempt: number,
  ): Promise<TrainingData | undefined> {
    if (!isTrainingConfig(config)) return undefined;
    try {
      return (await this.round(taskId))?.data(rank, attempt);
    } catch (err) {
      this.d.logger.error({ err, taskId }, 'describing a training round failed');
      return undefined;
    }
  }

  /** The open round of a task, loading it from the journal when needed. */
  async round(taskId: number): Promise<Round | undefined> {
    return this.rounds.get(taskId) ?? this.withLock(taskId, () => this.ensure(taskId));
  }

  /** Forgets a task's round (finished, failed, cancelled, or requeued as a whole). */
  drop(taskId: number): void {
    this.rounds.get(taskId)?.end();
  }

  /** Runs `fn` after every earlier operation on the same task: the lock each Round of it holds. */
  private withLock<T>(taskId: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(taskId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(taskId, tail);
    void tail.then(() => {
      if (this.locks.get(taskId) === tail) this.locks.delete(taskId);
    });
    return next;
  }

  /** The task's round, loaded from the journal when it is not known yet. Runs under the task's lock. */
  private async ensure(taskId: number): Promise<Round | undefined> {
    const known = this.rounds.get(taskId);
    if (known) return known;
    if (this.stopped) return undefined;
    const loaded = await loadRound(this.d, taskId);
    if (!loaded) return undefined;
    const round = new Round(
      this.roundDeps,
      loaded.start,
      (fn) => this.withLock(taskId, fn),
      () => {
        if (this.rounds.get(taskId) === round) this.rounds.delete(taskId);
      },
    );
    // Each journaled update once, in acceptance order: the sum is exactly the acknowledged ones.
    round.fold(loaded.updates);
    if (loaded.start.following) return round;
    this.rounds.set(taskId, round);
    if (loaded.updates.length > 0)
      this.d.logger.info(
        { taskId, round: round.number, updates: loaded.updates.length },
        'round resumed from the journal',
      );
    round.begin(loaded.pausedLeftMs);
    // A sampled task's open round: its sample as written, or taken now (resample.ts).
    await resumeSample(this.sampleDeps(this.roundDeps.ranks), round).catch((err: unknown) =>
      this.d.logger.error({ err, taskId }, 'resuming a sampled round failed'),
    );
    return round;
  }

  /** Acts on an intent for a task: its round pauses, resumes or ends (with its files, deleted). */
  private control(taskId: number, intent: TaskIntent): void {
    const round = this.rounds.get(taskId);
    if (intent === 'pause') return round?.pause();
    if (intent === 'resume') {
      void round?.resume().catch((err: unknown) => this.d.logger.error({ err }, 'resume failed'));
      return;
    }
    round?.end();
    // A deleted task's models, updates and checkpoints go with it.
    if (intent === 'delete') {
      for (const dir of [this.d.paths.taskDir(taskId), this.d.paths.checkpointDir(taskId)]) {
        void rm(dir, { recursive: true, force: true }).catch(() => undefined);
      }
    }
  }
}
