/**
 * The open round of one training task, and everything that changes it: updates accepted into
 * it (summed as they arrive), its deadline (extended below quorum, paused with the task), its
 * close (the next global model, then the next round, or the task complete). Every change is in
 * the round journal first; a Round only caches it and is rebuilt from it after a restart
 * (load-round.ts).
 *
 * A Round's state is one `phase`. Its changes run one at a time under the task's lock: the
 * public methods take it themselves, the private ones named `...Locked` run inside it.
 */
import { unlink } from 'node:fs/promises';
import type { ServerMessage, TrainingData } from '../../api/protocol.js';
import { announceStatus } from '../../bus/bus.js';
import { AppError, conflict } from '../../errors.js';
import * as journal from '../../storage/training-repo.js';
import { toDbTime } from '../../storage/values.js';
import { compatible, type SafetensorsHeader } from '../safetensors/header.js';
import { readHeaderFile } from '../safetensors/read.js';
import { syncFill } from '../over-select.js';
import type { TrainingConfig } from '../training-config.js';
import { closeRound, failTask, journalExtension } from './close-round.js';
import { journalUpdate, repairCount } from './ownership.js';
import { RoundSum } from './round-sum.js';
import {
  MAX_EXTENSIONS,
  type Incoming,
  type RoundDeps,
  type RoundPhase,
  type RoundStart,
} from './round-types.js';
import { dbDate, journalRow, ranksOf, slotKey, trainingData, updateOf, type AcceptedUpdate } from './run.js';
import { updateWeight } from './staleness.js';
import { removeStale, STALE_UPLOAD_MS } from './stale-files.js';
import { checkVersion } from './version-check.js';

export class Round {
  readonly taskId: number;
  readonly type: string;
  readonly config: TrainingConfig;
  readonly worldSize: number;
  /** Updates that close the round: every rank's, K (the ranks less over_select), or (async) buffer_size. Needed at the deadline: quorum, or buffer_size. */
  fill: number;
  private quorum: number;
  /** This round's updates (async: its buffer), by slotKey. */
  readonly accepted = new Map<string, AcceptedUpdate>();
  #number: number;
  #deadlineAt: Date;
  #extensions: number;
  #globalPath: string | null;
  #globalDigest: string | null;
  #reference: SafetensorsHeader | null;
  #sum: RoundSum;
  #phase: RoundPhase;

  get number(): number {
    return this.#number;
  }
  get deadlineAt(): Date {
    return this.#deadlineAt;
  }
  get extensions(): number {
    return this.#extensions;
  }
  /** The global model this round starts from; null in round 1. */
  get globalPath(): string | null {
    return this.#globalPath;
  }
  get globalDigest(): string | null {
    return this.#globalDigest;
  }
  /** Names, dtypes and shapes every update must have: the global model's, or round 1's first update's. */
  get reference(): SafetensorsHeader | null {
    return this.#reference;
  }
  /** The running FedAvg sum of the accepted updates. */
  get sum(): RoundSum {
    return this.#sum;
  }
  get phase(): Readonly<RoundPhase> {
    return this.#phase;
  }

  constructor(
    private readonly d: RoundDeps,
    start: RoundStart,
    /** Runs `fn` after every earlier operation on the task (the coordinator's lock of it). */
    private readonly lock: <T>(fn: () => Promise<T>) => Promise<T>,
    /** Tells the coordinator the round ended. */
    private readonly forget: () => void,
  ) {
    this.taskId = start.taskId;
    this.type = start.type;
    this.config = start.config;
    this.worldSize = start.worldSize;
    this.fill = start.config.async?.buffer_size ?? syncFill(start.config.over_select, start.worldSize);
    this.quorum = start.config.async?.buffer_size ?? start.config.quorum;
    this.#number = start.number;
    this.#deadlineAt = start.deadlineAt;
    this.#extensions = start.extensions;
    this.#globalPath = start.globalPath;
    this.#globalDigest = start.globalDigest;
    this.#reference = start.reference;
    this.#sum = this.newSum();
    this.#phase = { kind: start.following ? 'following' : 'loading' };
  }

  /** True while updates may come in (open, paused, or following the owner). */
  get accepting(): boolean {
    const k = this.#phase.kind;
    return k === 'open' || k === 'paused' || k === 'following';
  }

  /** Refuses (409) an update from round `from` unless this round may fold it now (`closed`: the journal said closed); counts a late or stale one. */
  checkVersion(from: number, rank: number, clientId: string, closed = false): Promise<void> {
    return checkVersion(this.d, this, { from, rank, clientId, closed }, () =>
      this.tellNewest(new Set([rank])),
    );
  }

  /** The `training` object of a rank's task message. */
  data(rank: number, attempt: number): TrainingData {
    return trainingData(this, rank, attempt);
  }

  /** A `fraction` round that sampled `ranks` clients (resample.ts) closes on their updates, less over_select's. */
  resize(ranks: number): void {
    const k = syncFill(this.config.over_select, ranks);
    [this.fill, this.quorum] = [k, Math.min(k, this.config.quorum)];
  }

  /** Adds updates the journal holds (at load: each once, in acceptance order). */
  fold(updates: readonly journal.UpdateRow[]): void {
    for (const u of updates) this.add(updateOf(u));
  }

  /**
   * Starts an owned round loaded from the journal: its deadline runs, or stands still while the
   * task is paused (`pausedLeftMs`); a round that already has every update closes at once.
   */
  begin(pausedLeftMs: number | null): void {
    if (pausedLeftMs !== null) this.#phase = { kind: 'paused', leftMs: pausedLeftMs };
    else this.arm();
    if (this.accepted.size >= this.fill) void this.close();
  }

  /**
   * Accepts an update, under the lock, after checking again what may have changed since the
   * upload was admitted (the round, the lease, another update of the rank, the first update's
   * layout). Throws the refusal. False (async only) when the update found its buffer full or
   * closing: it goes into the next buffer, once the owner has opened it (UploadService retries).
   */
  async accept(u: Incoming): Promise<boolean> {
    return this.lock(async () => {
      // Async: an update is never refused for arriving while a version is made.
      if (this.config.async && this.#phase.kind === 'closing') return false;
      await this.checkVersion(u.round, u.rank, u.clientId);
      await u.check();
      if (this.accepted.has(slotKey(u.round, u.rank)))
        throw conflict('update_exists', `rank ${u.rank} of round ${u.round} already has an accepted update`);
      if (this.#reference) {
        const c = compatible(this.#reference, u.header);
        if (!c.ok)
          throw new AppError(c.code, `update does not match the round's first update: ${c.message}`, 400);
      }
      return this.recordLocked(await u.place(), u.header);
    });
  }

  /** Folds in the updates other instances journaled for this owned round (training.update). */
  async sync(): Promise<void> {
    await this.lock(() => this.syncLocked());
  }

  /** The task was paused: the deadline stops with the time it had left. */
  pause(): void {
    const p = this.#phase;
    if (p.kind === 'open') {
      clearTimeout(p.timer);
      this.#phase = { kind: 'paused', leftMs: Math.max(0, this.#deadlineAt.getTime() - this.now()) };
    } else if (p.kind === 'closing') p.paused = true;
  }

  /** The task runs again: the deadline resumes with the time it had left. */
  async resume(): Promise<void> {
    const p = this.#phase;
    if (p.kind === 'closing') p.paused = false;
    if (p.kind !== 'paused') return;
    this.#deadlineAt = new Date(this.now() + p.leftMs);
    this.arm();
    await this.d.writes.run((trx) =>
      journal.updateOpenRound(trx, this.taskId, this.#number, {
        deadline_at: toDbTime(this.#deadlineAt, true),
      }),
    );
  }

  /** Ends the round (finished, failed, cancelled, or the task requeued as a whole). */
  end(): void {
    if (this.#phase.kind === 'open') clearTimeout(this.#phase.timer);
    this.#phase = { kind: 'ended' };
    this.forget();
    void this.#sum.close();
  }

  private is(kind: RoundPhase['kind']): boolean {
    return this.#phase.kind === kind;
  }

  private now(): number {
    return this.d.clock.now().getTime();
  }

  private newSum(): RoundSum {
    return new RoundSum(this.config, (err, rank) => {
      if (this.d.stopping() || this.#phase.kind === 'ended') return;
      this.d.logger.error(
        { err, taskId: this.taskId, round: this.#number, rank },
        'an accepted update did not add',
      );
    });
  }

  private add(u: AcceptedUpdate): void {
    this.accepted.set(slotKey(u.round, u.rank), u);
    if (this.#phase.kind !== 'following')
      this.#sum.add(u, updateWeight(this.config, this.#number, u), this.#reference);
  }

  /**
   * Journals an accepted update (its file already in place) and adds it to the sum. False
   * (async) when the journal holds a full buffer: another instance's updates filled it.
   */
  private async recordLocked(u: AcceptedUpdate, header: SafetensorsHeader): Promise<boolean> {
    const row = journalRow(this.taskId, this.#number, u, toDbTime(this.d.clock.now(), true));
    // At most `fill` updates, whichever instance journals them: sync, over-selection's first K;
    // async, buffer_size per version.
    const journaled = await this.d.writes.run((trx) => journalUpdate(trx, row, this.fill));
    if (!journaled && this.config.async) {
      // The owner folds in what filled it and closes; a follower's caller reads the round again.
      if (this.#phase.kind !== 'following') await this.syncLocked();
      return false;
    }
    if (!journaled) {
      await unlink(u.path).catch(() => undefined);
      await this.checkVersion(u.round, u.rank, u.clientId, true); // throws: the journal said closed
      throw conflict('round_closed', `round ${this.#number} closed during the upload`);
    }
    // Async: a stale update's rank trains from the newest version at once.
    if (u.round < this.#number) await this.tellNewest(new Set([u.rank]));
    if (this.#phase.kind === 'following') {
      // The owner adds it to its sum from the file (it may also find it in the journal itself).
      this.accepted.set(slotKey(u.round, u.rank), u);
      await this.d.bus.publish('training.update', { task_id: this.taskId, round: this.#number });
      return true;
    }
    this.#reference ??= header;
    this.add(u);
    if (this.accepted.size >= this.fill) void this.close();
    return true;
  }

  /** Sends `ranks` (all when null) a round_start for this round. */
  private tellNewest(ranks: ReadonlySet<number> | null): Promise<void> {
    return this.d.ranks.tellSome(this.taskId, ranks, (rank, attempt) => ({
      type: 'round_start',
      task_id: this.taskId,
      attempt,
      rank,
      ...this.data(rank, attempt),
    }));
  }

  private async syncLocked(): Promise<void> {
    if (!this.accepting || this.#phase.kind === 'following') return;
    const updates = await journal.listUpdates(this.d.db, this.taskId, this.#number);
    for (const u of updates) {
      if (this.accepted.has(slotKey(Number(u.round), Number(u.rank)))) continue;
      if (!this.#reference) {
        const h = await readHeaderFile(u.path);
        if (h.ok) this.#reference = h.header;
      }
      this.add(updateOf(u));
    }
    if (this.accepted.size >= this.fill) void this.close();
  }

  /** Open (or paused again, when `paused`), with the deadline's timer armed. */
  private arm(): void {
    if (this.#phase.kind === 'open') clearTimeout(this.#phase.timer);
    const delay = Math.max(0, this.#deadlineAt.getTime() - this.now());
    // setTimeout caps at 2^31-1 ms; a longer deadline re-arms when that fires.
    const timer = setTimeout(() => void this.deadline(), Math.min(delay, 2 ** 31 - 1));
    timer.unref();
    this.#phase = { kind: 'open', timer };
  }

  /** Back from a close that did not happen: open again, or paused if the task was paused meanwhile. */
  private reopen(): void {
    const p = this.#phase;
    if (p.kind !== 'closing') return;
    if (p.paused)
      this.#phase = { kind: 'paused', leftMs: Math.max(0, this.#deadlineAt.getTime() - this.now()) };
    else this.arm();
  }

  /**
   * Closes the round (every rank reported, or the deadline passed with the quorum in): no more
   * updates, then, under the lock, the next global model and the next round or the task
   * complete. A close that fails is logged and the round opens again. Code that holds the lock
   * must not wait for it.
   */
  async close(): Promise<void> {
    const p = this.#phase;
    if (p.kind !== 'open' && p.kind !== 'paused') return;
    if (p.kind === 'open') clearTimeout(p.timer);
    this.#phase = { kind: 'closing', paused: p.kind === 'paused' };
    await this.lock(() => this.closeLocked()).catch((err: unknown) => {
      this.d.logger.error({ err, taskId: this.taskId, round: this.#number }, 'closing a round failed');
      this.reopen();
    });
  }

  private async deadline(): Promise<void> {
    if (this.#phase.kind !== 'open') return;
    if (this.now() < this.#deadlineAt.getTime()) return this.arm();
    if (this.d.ownership) await this.sync();
    // The phase may have changed while it waited.
    if (!this.is('open')) return;
    if (this.accepted.size >= this.quorum) return void this.close();
    await this.lock(() => this.extendLocked());
    // Async ranks keep working at their own pace: a slow one is not given up.
    if (this.is('ended') || this.config.async) return;
    // The missing ranks go to other clients (their next attempt starts from the global model).
    await this.d.ranks.releaseLate(
      this.taskId,
      ranksOf(this.accepted),
      (rank) => `rank ${rank} missed the deadline of round ${this.#number}`,
    );
  }

  /** Below quorum at the deadline: one more deadline, or the task fails after MAX_EXTENSIONS. */
  private async extendLocked(): Promise<void> {
    this.#extensions++;
    if (this.#extensions > MAX_EXTENSIONS) {
      const q = `${this.accepted.size}/${this.quorum}`;
      return this.fail(`round ${this.#number} missed its quorum (${q}) ${MAX_EXTENSIONS + 1} times`);
    }
    this.#deadlineAt = new Date(this.now() + this.config.round_deadline_s * 1000);
    const below = `${this.accepted.size}/${this.quorum}`;
    await journalExtension(this.d, this, `round ${this.#number} below quorum at its deadline (${below})`);
    if (this.#phase.kind === 'open') this.arm();
  }

  private async closeLocked(): Promise<void> {
    if (this.#phase.kind !== 'closing') return;
    // Read before the close: a last round's close ends the leases.
    const remote = await this.d.ranks.remote(this.taskId);
    const out = await closeRound(this.d, this);
    await this.#sum.close();
    if (!out.ok && out.stale) return this.resyncLocked();
    if (!out.ok) return this.fail(`round ${this.#number} could not be aggregated: ${out.message}`);
    const local = this.d.ranks.local(this.taskId);
    if (out.last) {
      const complete: ServerMessage = {
        type: 'training_complete',
        task_id: this.taskId,
        rounds: this.config.rounds,
        model_url: `/api/tasks/${this.taskId}/model`,
        model_digest: out.digest,
      };
      await this.d.ranks.complete(this.taskId, local, remote, complete, () => this.end());
      await announceStatus(this.d.bus, this.taskId, 'completed', 100);
      await this.d.bus.publish('work.available', { task_id: 0 });
      if (this.d.onComplete && out.checkpoint) {
        void this.d
          .onComplete(this.taskId, out.checkpoint, out.digest)
          .catch((err: unknown) =>
            this.d.logger.error({ err, taskId: this.taskId }, 'post-completion hook failed'),
          );
      }
      return;
    }
    // Async: only the ranks waiting on this version (the others are training from older ones).
    const waiting = this.config.async
      ? new Set([...this.accepted.values()].filter((u) => u.round === this.#number).map((u) => u.rank))
      : null;
    await this.advance(out.outPath, out.digest);
    if (!(await this.d.resample?.(this))) await this.tellNewest(waiting);
    await this.d.bus.publish('task.changed', { task_id: this.taskId, status: 'running' });
  }

  /** The round closed: this becomes the next one, from the new global model. */
  private async advance(globalPath: string, digest: string): Promise<void> {
    const header = await readHeaderFile(globalPath);
    const paused = this.#phase.kind === 'closing' && this.#phase.paused;
    this.#number++;
    this.#deadlineAt = new Date(this.now() + this.config.round_deadline_s * 1000);
    this.#extensions = 0;
    this.#globalPath = globalPath;
    this.#globalDigest = digest;
    if (header.ok) this.#reference = header.header;
    this.#sum = this.newSum();
    this.accepted.clear();
    // The journal's deadline is the one just written; read it back so a restart agrees.
    const row = await journal.findRound(this.d.db, this.taskId, this.#number);
    if (row) this.#deadlineAt = dbDate(row.deadline_at);
    if (paused) this.#phase = { kind: 'paused', leftMs: this.config.round_deadline_s * 1000 };
    else this.arm();
    if (this.d.ownership) {
      void removeStale(this.d.paths.incoming(this.taskId), STALE_UPLOAD_MS, this.now()).catch(
        () => undefined,
      );
    }
  }

  /**
   * A close found the round changed under it: closed by another instance (ownership lost), or
   * with updates journaled after the sum was taken.
   */
  private async resyncLocked(): Promise<void> {
    const row = await journal.findRound(this.d.db, this.taskId, this.#number);
    const owner = !this.d.ownership || (await this.d.ownership.acquire(this.taskId));
    if (!row || row.state !== 'open' || !owner) {
      this.d.logger.warn({ taskId: this.taskId, round: this.#number }, 'round closed elsewhere; run dropped');
      this.end();
      return;
    }
    const updates = await journal.listUpdates(this.d.db, this.taskId, this.#number);
    if (Number(row.num_updates) !== updates.length)
      await repairCount(this.d.db, this.taskId, this.#number, updates.length);
    // The sum was used up by the failed close: the next close reads the journal's files.
    this.reopen();
    for (const u of updates)
      if (!this.accepted.has(slotKey(Number(u.round), Number(u.rank)))) this.add(updateOf(u));
    if (this.accepted.size >= this.fill) void this.close();
  }

  private async fail(why: string): Promise<void> {
    this.d.logger.warn({ taskId: this.taskId, round: this.#number }, why);
    this.end();
    await failTask(this.d, this.taskId, why);
  }
}
