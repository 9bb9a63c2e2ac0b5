import { rm, unlink } from 'node:fs/promises';
import type { Kysely } from 'kysely';
import type { ServerMessage, TrainingData } from '../../api/protocol.js';
import type { Bus, TaskIntent } from '../../bus/bus.js';
import type { ClientRegistry, Lease } from '../../clients/registry.js';
import { conflict } from '../../errors.js';
import type { Database } from '../../storage/schema.js';
import { findTask, insertTaskEvent, latestEventAt } from '../../storage/task-repo.js';
import * as journal from '../../storage/training-repo.js';
import { parseJson, toDbTime } from '../../storage/values.js';
import { createFedAvgSession } from '../aggregation/runner.js';
import { readHeaderFile } from '../safetensors/read.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { isTrainingConfig, type TrainingConfig } from '../training-config.js';
import { closeRound, failTask, type CloseDeps } from './close-round.js';
import { journalUpdate, liveRanks, repairCount, type TrainingOwnership } from './ownership.js';
import { missingFiles, rewindToCheckpoint } from './rewind.js';
import { removeStale, STALE_UPLOAD_MS } from './stale-files.js';
import { incremental, trainingData, type AcceptedUpdate, type Run } from './run.js';

export type { RemoteLease, TrainingOwnership } from './ownership.js';

/** Deadlines passed below quorum before a round (and its task) fails. */
export const MAX_EXTENSIONS = 3;

export interface CoordinatorDeps extends CloseDeps {
  db: Kysely<Database>;
  registry: ClientRegistry;
  bus: Bus;
  /** Called with a finished task (e.g. TorchServe registration); errors are logged. */
  onComplete?: (taskId: number, modelPath: string, digest: string) => Promise<void>;
  /** Several instances share the database: who aggregates which task (src/cluster). */
  ownership?: TrainingOwnership;
}

/**
 * Runs the rounds of every training task this server holds: opens round 1 when the ranks are
 * placed, accepts updates (summing FedAvg ones as they arrive), closes rounds when every rank
 * has reported or at the deadline once the quorum has, publishes each global model and tells
 * the ranks (`round_start`), and completes the task after the last round (`training_complete`).
 * Every state change is in the round journal first; this class only caches it.
 */
export class RoundCoordinator {
  private readonly runs = new Map<number, Run>();
  private readonly locks = new Map<number, Promise<unknown>>();
  private readonly unsubscribes: (() => void)[] = [];
  private release: ((lease: Lease, reason: string) => Promise<void>) | null = null;
  private stopped = false;

  constructor(private readonly d: CoordinatorDeps) {}

  /** How a rank that missed a deadline is given up (LeaseService.releaseLease; set by the farm). */
  releaseRanksWith(release: (lease: Lease, reason: string) => Promise<void>): void {
    this.release = release;
  }

  /** Resumes every running training task from the journal (after a restart). */
  async start(): Promise<void> {
    this.unsubscribes.push(this.d.bus.subscribe('task.control', (m) => this.control(m.task_id, m.action)));
    if (this.d.ownership) {
      // Another instance journaled an update of a round this instance owns.
      this.unsubscribes.push(
        this.d.bus.subscribe('training.update', (m) => {
          const run = this.runs.get(m.task_id);
          if (!run || run.round !== m.round) return;
          void this.withLock(run.taskId, () => this.sync(run)).catch((err: unknown) =>
            this.d.logger.error({ err, taskId: run.taskId }, 'folding in a journaled update failed'),
          );
        }),
      );
    }
    for (const r of await journal.listOpenRounds(this.d.db)) {
      await this.withLock(r.task_id, () => this.ensureRun(r.task_id)).catch((err: unknown) =>
        this.d.logger.error({ err, taskId: r.task_id }, 'resuming a training task failed'),
      );
    }
  }

  /** Stops timers and threads; the journal already holds everything. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const u of this.unsubscribes.splice(0)) u();
    await Promise.all([...this.locks.values()].map((p) => p.catch(() => undefined)));
    for (const id of [...this.runs.keys()]) this.drop(id);
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
      const run = await this.withLock(taskId, () => this.ensureRun(taskId));
      return run ? trainingData(run, rank, attempt) : undefined;
    } catch (err) {
      this.d.logger.error({ err, taskId }, 'describing a training round failed');
      return undefined;
    }
  }

  /** The live run of a task, loading it from the journal when needed. */
  async run(taskId: number): Promise<Run | undefined> {
    return this.runs.get(taskId) ?? this.withLock(taskId, () => this.ensureRun(taskId));
  }

  /** Runs `fn` after every earlier operation on the same task. */
  withLock<T>(taskId: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(taskId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(taskId, tail);
    void tail.then(() => {
      if (this.locks.get(taskId) === tail) this.locks.delete(taskId);
    });
    return next;
  }

  /**
   * Records an accepted update (its file already renamed into place) and adds it to the sum.
   * Caller holds the task's lock and has checked the round and the lease.
   */
  async record(run: Run, u: AcceptedUpdate, header: SafetensorsHeader): Promise<void> {
    const now = this.d.clock.now();
    const journaled = await this.d.writes.run((trx) =>
      journalUpdate(trx, {
        task_id: run.taskId,
        round: run.round,
        rank: u.rank,
        attempt: u.attempt,
        client_id: u.clientId,
        num_samples: u.numSamples,
        path: u.path,
        digest: u.digest,
        bytes: u.bytes,
        metrics: u.metrics ? JSON.stringify(u.metrics) : null,
        accepted_at: toDbTime(now, true),
      }),
    );
    if (!journaled) {
      await unlink(u.path).catch(() => undefined);
      throw conflict('round_closed', `round ${run.round} closed during the upload`);
    }
    if (run.follower) {
      // The owner adds it to its sum from the file (it may also find it in the journal itself).
      run.accepted.set(u.rank, u);
      await this.d.bus.publish('training.update', { task_id: run.taskId, round: run.round });
      return;
    }
    run.reference ??= header;
    this.add(run, u);
    if (run.accepted.size >= run.worldSize) this.closeSoon(run);
  }

  private add(run: Run, u: AcceptedUpdate): void {
    run.accepted.set(u.rank, u);
    if (!incremental(run) || !run.sessionSound || !run.reference) return;
    if (!run.session) {
      // A float32 sum: one model of memory whatever the number of ranks (error ~ N x 2^-24).
      const made = createFedAvgSession(run.reference, {
        precision: 'float32',
        ...(run.config.aggregation.mu === undefined ? {} : { mu: run.config.aggregation.mu }),
      });
      if (!made.ok) {
        run.sessionSound = false;
        return;
      }
      run.session = made.session;
    }
    const session = run.session;
    run.adds.push(
      // Uploads are scanned for NaN/Inf on arrival, before they are journaled.
      session.add(u.path, u.numSamples, { verified: true }).then(
        (r) => {
          if (!r.ok) {
            run.sessionSound = false;
            this.d.logger.error({ taskId: run.taskId, rank: u.rank, r }, 'an accepted update did not add');
          }
        },
        (err: unknown) => {
          // The session's thread ended (the server stopping, or the run dropped) while this add
          // was in flight: the sum is incomplete, rebuilt from the journal if it is needed again.
          run.sessionSound = false;
          if (!this.stopped && !run.ended) this.d.logger.error({ err, taskId: run.taskId }, 'an add failed');
        },
      ),
    );
  }

  /** Loads the open round from the journal (opening round 1 when there is none). Caller holds the lock. */
  private async ensureRun(taskId: number): Promise<Run | undefined> {
    const known = this.runs.get(taskId);
    if (known) return known;
    if (this.stopped) return undefined;
    const task = await findTask(this.d.db, taskId);
    if (!task || (task.status !== 'running' && task.status !== 'paused')) return undefined;
    const stored = parseJson<TrainingConfig>(task.config);
    if (!stored || !isTrainingConfig(stored)) return undefined;
    let config = stored;
    const owner = !this.d.ownership || (await this.d.ownership.acquire(taskId));
    let row = await journal.latestRound(this.d.db, taskId);
    if (!row) {
      // Owner or not: a follower placing ranks before the owner opened round 1 must not send them
      // a task without its round (workers would fail it).
      const now = this.d.clock.now();
      await this.d.writes.run((trx) =>
        journal.openFirstRound(trx, {
          task_id: taskId,
          opened_at: toDbTime(now, true),
          deadline_at: toDbTime(new Date(now.getTime() + config.round_deadline_s * 1000), true),
        }),
      );
      row = await journal.latestRound(this.d.db, taskId);
    }
    if (!row || row.state !== 'open') return undefined;
    let updates = await journal.listUpdates(this.d.db, taskId, Number(row.round));
    const missing = owner ? await missingFiles(row, updates) : [];
    if (missing.length > 0) {
      // MODEL_CACHE_DIR lost its files: back to the newest checkpoint (see rewind.ts).
      config = await rewindToCheckpoint(this.d, taskId, config, row, missing);
      row = await journal.latestRound(this.d.db, taskId);
      if (!row || row.state !== 'open') return undefined;
      updates = [];
    }
    const run: Run = {
      ...(owner ? {} : { follower: true }),
      taskId,
      type: task.type,
      config,
      worldSize: Number(task.world_size),
      round: Number(row.round),
      deadlineAt: new Date(`${String(row.deadline_at).replace(' ', 'T')}Z`),
      extensions: Number(row.extensions),
      globalPath: row.global_path,
      globalDigest: row.global_digest,
      reference: null,
      session: null,
      sessionSound: true,
      accepted: new Map(),
      adds: [],
      timer: null,
      closing: false,
      ended: false,
    };
    // Uploads cut by a restart left temporary files; none can be in flight before the run exists.
    // With several instances on shared storage another instance's may be: only the files left
    // untouched for STALE_UPLOAD_MS go (here, and again each time a round closes).
    if (!this.d.ownership) await rm(this.d.paths.incoming(taskId), { recursive: true, force: true });
    else await removeStale(this.d.paths.incoming(taskId), STALE_UPLOAD_MS, this.d.clock.now().getTime());
    const first = run.globalPath ?? updates[0]?.path;
    if (first) {
      const h = await readHeaderFile(first);
      if (h.ok) run.reference = h.header;
    }
    if (!owner) {
      for (const u of updates) run.accepted.set(Number(u.rank), updateOf(u));
      return run;
    }
    if (Number(row.num_updates) !== updates.length)
      await repairCount(this.d.db, taskId, run.round, updates.length);
    // Each journaled update once, in acceptance order: the sum is exactly the acknowledged ones.
    for (const u of updates) this.add(run, updateOf(u));
    this.runs.set(taskId, run);
    if (updates.length > 0)
      this.d.logger.info(
        { taskId, round: run.round, updates: updates.length },
        'round resumed from the journal',
      );
    if (task.status === 'paused') {
      // Paused when the server stopped: the deadline stays stopped, with the time it had left
      // when the task was paused (the `paused` event's time), until the task is resumed.
      const pausedAt = await latestEventAt(this.d.db, taskId, 'paused');
      const from = pausedAt ? new Date(`${pausedAt.replace(' ', 'T')}Z`) : this.d.clock.now();
      run.pausedLeft = Math.max(0, run.deadlineAt.getTime() - from.getTime());
    } else this.arm(run);
    if (run.accepted.size >= run.worldSize) this.closeSoon(run);
    return run;
  }

  /**
   * Folds in the updates other instances journaled for the owned open round (each once, read
   * from disk as after a restart). Caller holds the task's lock.
   */
  private async sync(run: Run): Promise<void> {
    if (run.ended || run.closing || this.runs.get(run.taskId) !== run) return;
    const updates = await journal.listUpdates(this.d.db, run.taskId, run.round);
    for (const u of updates) {
      if (run.accepted.has(Number(u.rank))) continue;
      if (!run.reference) {
        const h = await readHeaderFile(u.path);
        if (h.ok) run.reference = h.header;
      }
      this.add(run, updateOf(u));
    }
    if (run.accepted.size >= run.worldSize) this.closeSoon(run);
  }

  /**
   * A close found the round changed under it: closed by another instance (ownership lost), or
   * with updates journaled after the sum was taken. Caller holds the task's lock.
   */
  private async resync(run: Run): Promise<void> {
    const row = await journal.findRound(this.d.db, run.taskId, run.round);
    const owner = !this.d.ownership || (await this.d.ownership.acquire(run.taskId));
    if (!row || row.state !== 'open' || !owner) {
      this.d.logger.warn({ taskId: run.taskId, round: run.round }, 'round closed elsewhere; run dropped');
      this.drop(run.taskId);
      return;
    }
    const updates = await journal.listUpdates(this.d.db, run.taskId, run.round);
    if (Number(row.num_updates) !== updates.length)
      await repairCount(this.d.db, run.taskId, run.round, updates.length);
    // The sum was consumed by the failed close: the next close reads the journal's files.
    run.sessionSound = false;
    run.closing = false;
    for (const u of updates) if (!run.accepted.has(Number(u.rank))) this.add(run, updateOf(u));
    if (run.accepted.size >= run.worldSize) this.closeSoon(run);
    else this.arm(run);
  }

  private arm(run: Run): void {
    if (run.timer) clearTimeout(run.timer);
    const delay = Math.max(0, run.deadlineAt.getTime() - this.d.clock.now().getTime());
    // setTimeout caps at 2^31-1 ms; a longer deadline re-arms when that fires.
    run.timer = setTimeout(() => void this.deadline(run), Math.min(delay, 2 ** 31 - 1));
    run.timer.unref();
  }

  private closeSoon(run: Run): void {
    if (run.closing || run.ended) return;
    run.closing = true;
    if (run.timer) clearTimeout(run.timer);
    void this.withLock(run.taskId, () => this.close(run)).catch((err: unknown) => {
      this.d.logger.error({ err, taskId: run.taskId, round: run.round }, 'closing a round failed');
      run.closing = false;
      if (!run.ended) this.arm(run);
    });
  }

  private async deadline(run: Run): Promise<void> {
    if (run.ended || run.closing || run.pausedLeft !== undefined || this.runs.get(run.taskId) !== run) return;
    if (this.d.clock.now().getTime() < run.deadlineAt.getTime()) return this.arm(run);
    if (this.d.ownership) await this.withLock(run.taskId, () => this.sync(run));
    if (run.ended || run.closing) return;
    if (run.accepted.size >= run.config.quorum) return this.closeSoon(run);
    await this.withLock(run.taskId, async () => {
      run.extensions++;
      if (run.extensions > MAX_EXTENSIONS) {
        await this.fail(
          run,
          `round ${run.round} missed its quorum (${run.accepted.size}/${run.config.quorum}) ${MAX_EXTENSIONS + 1} times`,
        );
        return;
      }
      const now = this.d.clock.now();
      run.deadlineAt = new Date(now.getTime() + run.config.round_deadline_s * 1000);
      await this.d.writes.run(async (trx) => {
        await journal.updateOpenRound(trx, run.taskId, run.round, {
          deadline_at: toDbTime(run.deadlineAt, true),
          extensions: run.extensions,
        });
        await insertTaskEvent(trx, {
          task_id: run.taskId,
          at: toDbTime(now, true),
          kind: 'round_extended',
          message: `round ${run.round} below quorum at its deadline (${run.accepted.size}/${run.config.quorum}); waiting until ${run.deadlineAt.toISOString()}`,
        });
      });
      this.arm(run);
    });
    if (run.ended) return;
    // The missing ranks go to other clients (their next attempt starts from the global model).
    const missing = this.d.registry
      .leasesOf(run.taskId)
      .filter((l) => l.assignmentId !== 0 && !run.accepted.has(l.rank));
    for (const l of missing) {
      await this.release?.(l, `rank ${l.rank} missed the deadline of round ${run.round}`).catch(
        (err: unknown) =>
          this.d.logger.error({ err, taskId: run.taskId, rank: l.rank }, 'releasing a late rank failed'),
      );
    }
    // Ranks whose sockets other instances hold are released there.
    for (const r of await this.remoteRanks(run.taskId)) {
      if (run.accepted.has(r.rank)) continue;
      await this.d.bus.publish('cluster.release', {
        client_id: r.client_id,
        task_id: run.taskId,
        attempt: r.attempt,
        reason: `rank ${r.rank} missed the deadline of round ${run.round}`,
      });
    }
  }

  /** Live ranks of a task held through other instances (none on a lone instance). */
  private async remoteRanks(taskId: number): Promise<{ client_id: string; rank: number; attempt: number }[]> {
    if (!this.d.ownership) return [];
    const rows = await liveRanks(this.d.db, taskId);
    return rows.filter((r) => this.d.registry.get(r.client_id)?.leases.get(taskId)?.attempt !== r.attempt);
  }

  /** Sends each remote rank its message through the bus, to the instance holding its socket. */
  private async pushRemote(
    taskId: number,
    ranks: { client_id: string; rank: number; attempt: number }[],
    message: (rank: number, attempt: number) => ServerMessage,
  ): Promise<void> {
    for (const r of ranks) {
      await this.d.bus.publish('cluster.push', {
        client_id: r.client_id,
        task_id: taskId,
        attempt: r.attempt,
        message: message(r.rank, r.attempt),
      });
    }
  }

  private async close(run: Run): Promise<void> {
    if (run.ended || this.runs.get(run.taskId) !== run) return;
    // Read before the close: a last round's close ends the leases.
    const remote = await this.remoteRanks(run.taskId);
    const out = await closeRound(this.d, run);
    await run.session?.close();
    run.session = null;
    if (!out.ok && out.stale) return this.resync(run);
    if (!out.ok) return this.fail(run, `round ${run.round} could not be aggregated: ${out.message}`);
    const leases = this.d.registry.leasesOf(run.taskId).filter((l) => l.assignmentId !== 0);
    if (out.last) {
      const complete = {
        type: 'training_complete' as const,
        task_id: run.taskId,
        rounds: run.config.rounds,
        model_url: `/api/tasks/${run.taskId}/model`,
        model_digest: out.digest,
      };
      await this.pushRemote(run.taskId, remote, () => complete);
      this.drop(run.taskId);
      for (const l of leases) {
        const client = this.d.registry.get(l.clientId);
        client?.leases.delete(run.taskId);
        client?.send?.(complete);
      }
      await this.d.bus.publish('task.changed', { task_id: run.taskId, status: 'completed', progress: 100 });
      await this.d.bus.publish('work.available', { task_id: 0 });
      if (this.d.onComplete && out.checkpoint) {
        void this.d
          .onComplete(run.taskId, out.checkpoint, out.digest)
          .catch((err: unknown) =>
            this.d.logger.error({ err, taskId: run.taskId }, 'post-completion hook failed'),
          );
      }
      return;
    }
    const header = await readHeaderFile(out.outPath);
    Object.assign(run, {
      round: run.round + 1,
      deadlineAt: new Date(this.d.clock.now().getTime() + run.config.round_deadline_s * 1000),
      extensions: 0,
      globalPath: out.outPath,
      globalDigest: out.digest,
      reference: header.ok ? header.header : run.reference,
      sessionSound: true,
      accepted: new Map(),
      adds: [],
      closing: false,
    });
    // The journal's deadline is the one just written; read it back so a restart agrees.
    const row = await journal.findRound(this.d.db, run.taskId, run.round);
    if (row) run.deadlineAt = new Date(`${String(row.deadline_at).replace(' ', 'T')}Z`);
    this.arm(run);
    if (this.d.ownership) {
      void removeStale(
        this.d.paths.incoming(run.taskId),
        STALE_UPLOAD_MS,
        this.d.clock.now().getTime(),
      ).catch(() => undefined);
    }
    for (const l of leases) {
      this.d.registry.get(l.clientId)?.send?.({
        type: 'round_start',
        task_id: run.taskId,
        attempt: l.attempt,
        rank: l.rank,
        ...trainingData(run, l.rank, l.attempt),
      });
    }
    await this.pushRemote(run.taskId, remote, (rank, attempt) => ({
      type: 'round_start',
      task_id: run.taskId,
      attempt,
      rank,
      ...trainingData(run, rank, attempt),
    }));
    await this.d.bus.publish('task.changed', { task_id: run.taskId, status: 'running' });
  }

  private async fail(run: Run, why: string): Promise<void> {
    this.d.logger.warn({ taskId: run.taskId, round: run.round }, why);
    this.drop(run.taskId);
    await failTask(this.d, run.taskId, why);
  }

  /** Acts on an intent for a task: its round pauses, resumes or ends (with its files, deleted). */
  private control(taskId: number, intent: TaskIntent): void {
    if (intent === 'pause') return this.pause(taskId);
    if (intent === 'resume') {
      void this.resume(taskId).catch((err: unknown) => this.d.logger.error({ err }, 'resume failed'));
      return;
    }
    this.drop(taskId);
    // A deleted task's models, updates and checkpoints go with it.
    if (intent === 'delete') {
      for (const dir of [this.d.paths.taskDir(taskId), this.d.paths.checkpointDir(taskId)]) {
        void rm(dir, { recursive: true, force: true }).catch(() => undefined);
      }
    }
  }

  /** A paused task's round deadline stops running; it resumes with the time it had left. */
  private pause(taskId: number): void {
    const run = this.runs.get(taskId);
    if (!run || run.pausedLeft !== undefined) return;
    if (run.timer) clearTimeout(run.timer);
    run.pausedLeft = Math.max(0, run.deadlineAt.getTime() - this.d.clock.now().getTime());
  }

  private async resume(taskId: number): Promise<void> {
    const run = this.runs.get(taskId);
    if (!run || run.pausedLeft === undefined) return;
    run.deadlineAt = new Date(this.d.clock.now().getTime() + run.pausedLeft);
    run.pausedLeft = undefined;
    await this.d.writes.run((trx) =>
      journal.updateOpenRound(trx, taskId, run.round, { deadline_at: toDbTime(run.deadlineAt, true) }),
    );
    if (!run.closing && !run.ended) this.arm(run);
  }

  /** Forgets a task's run (finished, failed, cancelled, or requeued as a whole). */
  drop(taskId: number): void {
    const run = this.runs.get(taskId);
    if (!run) return;
    run.ended = true;
    if (run.timer) clearTimeout(run.timer);
    this.runs.delete(taskId);
    void run.session?.close();
  }
}

/** An update as the journal records it. */
function updateOf(u: journal.UpdateRow): AcceptedUpdate {
  return {
    rank: Number(u.rank),
    attempt: Number(u.attempt),
    clientId: u.client_id,
    numSamples: Number(u.num_samples),
    path: u.path,
    digest: u.digest,
    bytes: Number(u.bytes),
    metrics: parseJson<Record<string, unknown>>(u.metrics),
  };
}
