import type { TaskData, TrainingData } from '../api/protocol.js';
import { announceStatus, type Bus } from '../bus/bus.js';
import type { ClientRegistry, Lease } from '../clients/registry.js';
import type { Logger } from '../observability/logger.js';
import type { FarmMetrics } from '../observability/metrics.js';
import { isUniqueViolation, type Executor } from '../storage/executor.js';
import {
  findTask,
  findTasks,
  listPendingTasks,
  setUnschedulableReason,
  type TaskRow,
} from '../storage/task-repo.js';
import { liveRanks } from '../storage/training-repo.js';
import { parseJson, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import { claimRanks } from '../tasks/lifecycle.js';
import { placeAcross, type FarmView, type RemoteClient } from './across.js';
import { claimTasks, provisionalLease } from './claim.js';
import { PendingQueue } from './pending-queue.js';
import {
  placeTasks,
  requirementClass,
  unschedulableReason,
  type PendingTask,
  type Placement,
} from './policy.js';
import { taskFrameData } from '../compat/task-frame.js';
import { queuedConfig } from '../training/sampling-config.js';

/** Lost ranks whose claim failed (a remote slot taken meanwhile, a deadlock) wait this long for a pass: no spinning. */
const CLAIM_RETRY_MS = 1000;

/** Adds a training task's round state to its `task` messages (src/training implements it; never throws). */
export interface TrainingHook {
  describeTraining(
    taskId: number,
    config: Record<string, unknown> | null,
    rank: number,
    attempt: number,
  ): Promise<TrainingData | undefined>;
}

interface QueuedTask extends PendingTask {
  /** True for ranks of a task that already runs (re-placing a lost rank). */
  partial: boolean;
  queuedAt: number;
  /** `attempts` as read; a claim expects it unchanged. */
  attempts: number;
  name: string | null;
  config: Record<string, unknown>;
  unschedulable: string | null;
  /** registry.hardwareVersion when the unschedulable note was last checked. */
  reviewedVersion: number;
}

/**
 * Pushes pending work to idle clients. Keeps the queue in memory (rebuilt from the
 * database at start and on every "work.available"), asks the pure policy where each task
 * goes, claims the tasks with conditional updates in one group transaction, and only
 * then sends the `task` messages.
 */
export class Dispatcher {
  private readonly queue = new PendingQueue<QueuedTask>();
  private readonly refreshing = new Map<number, { started: boolean; done: Promise<void> }>();
  private passScheduled = false;
  private reads = new Map<number, { resolve(r: TaskRow | undefined): void; reject(e: unknown): void }[]>();
  private readScheduled = false;
  /** Passes run one after another, never two at once. */
  private passes: Promise<void> = Promise.resolve();
  /** The pass waiting behind the running one: every caller until it starts shares it. */
  private nextPass: Promise<void> | null = null;
  /** Bumped by everything that may open a placement (schedule(), a task queued). */
  private changes = 0;
  /** What the last pass that placed nothing saw; a pass that would see the same is skipped. */
  private idleSignature: string | null = null;
  /** Bumped when the other instances' clients may have changed (connected, freed a slot). */
  private farmVersion = 0;
  private closed = false;
  /** Ends a lease committed for a client that left meanwhile (LeaseService, wired by the farm). */
  private releaseLeftBehind: ((lease: Lease, reason: string) => Promise<void>) | null = null;

  constructor(
    private readonly deps: {
      db: Executor;
      writes: WriteQueue;
      registry: ClientRegistry;
      bus: Bus;
      clock: Clock;
      logger: Logger;
      metrics: FarmMetrics;
      maxTasksPerClient: number;
      training?: TrainingHook;
      /** The clients of the other instances (src/cluster), for tasks with several ranks. */
      farm?: FarmView;
    },
  ) {}

  /** How to end a lease whose claim committed after its client had gone (set once by the farm). */
  releaseLeasesWith(release: (lease: Lease, reason: string) => Promise<void>): void {
    this.releaseLeftBehind = release;
  }

  /** Loads every pending task (at start). */
  async loadPending(): Promise<void> {
    const rows = await listPendingTasks(this.deps.db);
    for (const r of rows) this.enqueueRow(r);
    this.schedule();
  }

  /** (Re)reads one task and queues it if it is pending; drops it otherwise. */
  refresh(taskId: number): Promise<void> {
    // Events about one task that arrive before its read has started share that read; one
    // arriving while the read runs gets a read of its own afterwards (it may be newer).
    const pending = this.refreshing.get(taskId);
    // Queued already (offered at creation, or read for an earlier event): a pending task's row
    // changes only by leaving `pending`, and the claim is conditional on status and attempts, so
    // a stale entry costs a failed claim and a read then, never a wrong assignment.
    if (!pending && this.queue.get(taskId)?.partial === false) return Promise.resolve();
    // A read queued for this turn but not yet sent is as new as this event.
    if (pending && (!pending.started || this.reads.has(taskId))) return pending.done;
    const entry = { started: false, done: Promise.resolve() };
    entry.done = (pending?.done ?? Promise.resolve())
      .then(() => {
        entry.started = true;
        return this.load(taskId);
      })
      .finally(() => {
        if (this.refreshing.get(taskId) === entry) this.refreshing.delete(taskId);
      });
    this.refreshing.set(taskId, entry);
    return entry.done;
  }

  private async load(taskId: number): Promise<void> {
    const row = await this.read(taskId);
    if (!row || row.status !== 'pending') {
      this.queue.delete(taskId);
      return;
    }
    // A read older than our own claim of the task (leases here) must not queue it again.
    if (this.deps.registry.leasesOf(taskId).length > 0) return;
    this.enqueueRow(row);
    this.schedule();
  }

  /** Reads of one turn share one `SELECT ... WHERE id IN (...)`. */
  private read(taskId: number): Promise<TaskRow | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.reads.get(taskId);
      if (waiting) waiting.push({ resolve, reject });
      else this.reads.set(taskId, [{ resolve, reject }]);
      if (this.readScheduled) return;
      this.readScheduled = true;
      setImmediate(() => {
        this.readScheduled = false;
        const batch = this.reads;
        this.reads = new Map();
        findTasks(this.deps.db, [...batch.keys()]).then(
          (rows) => {
            const byId = new Map(rows.map((r) => [Number(r.id), r]));
            for (const [id, ws] of batch) for (const w of ws) w.resolve(byId.get(id));
          },
          (err: unknown) => {
            for (const ws of batch.values()) for (const w of ws) w.reject(err);
          },
        );
      });
    });
  }

  /** Queues tasks this process has just created (pending, never attempted) without reading them. */
  offer(rows: readonly TaskRow[]): void {
    if (this.closed) return;
    for (const r of rows) if (!this.queue.has(r.id)) this.enqueueRow(r);
    this.schedule();
  }

  drop(taskId: number): void {
    if (!this.queue.get(taskId)?.partial) this.queue.delete(taskId);
  }

  /** Queues ranks of a running multi-rank task for new clients; the other ranks go on. */
  async requeueRanks(taskId: number, ranks: readonly number[]): Promise<void> {
    if (await this.queueRanks(taskId, ranks)) this.schedule();
  }

  /** Queues ranks of a running task that have no live assignment; false when none is queued. */
  private async queueRanks(taskId: number, ranks: readonly number[]): Promise<boolean> {
    const row = await findTask(this.deps.db, taskId);
    if (!row || row.status !== 'running') return false;
    const live = new Set((await liveRanks(this.deps.db, taskId)).map((r) => r.rank));
    const queued = new Set(this.queue.get(taskId)?.ranks ?? []);
    for (const r of ranks) if (!live.has(r)) queued.add(r);
    const sorted = [...queued].sort((a, b) => a - b);
    if (sorted.length > 0) this.enqueueRow(row, sorted);
    return sorted.length > 0;
  }

  has(taskId: number): boolean {
    return this.queue.has(taskId);
  }

  pendingCount(): number {
    return this.queue.size;
  }

  /** Runs a dispatch pass soon; many calls in one turn make one pass. */
  schedule(): void {
    this.changes++;
    if (this.closed || this.passScheduled) return;
    this.passScheduled = true;
    setImmediate(() => {
      this.passScheduled = false;
      void this.passNow();
    });
  }

  /** Runs a pass now (after any pass under way) and resolves when its tasks are sent. */
  passNow(): Promise<void> {
    // A flood of task_request (each asks for a pass) costs one pass per pass time, not one
    // per request: a pass that has not started yet sees everything its later callers would.
    if (this.nextPass) return this.nextPass;
    const next: Promise<void> = this.passes.then(() => {
      if (this.nextPass === next) this.nextPass = null;
      return this.pass();
    });
    this.nextPass = next;
    this.passes = next;
    return next;
  }

  /**
   * The rest of the farm may have changed (a client of another instance connected or left, a
   * task ended there): a pass runs when a task with several ranks waits for it.
   */
  farmChanged(): void {
    this.farmVersion++;
    for (const t of this.queue.values()) if (t.worldSize > 1) return this.schedule();
  }

  close(): void {
    this.closed = true;
  }

  /** Explains unschedulable tasks, and clears the note when a fitting client appears. */
  async reviewUnschedulable(): Promise<void> {
    const version = this.deps.registry.hardwareVersion;
    let known: ReturnType<ClientRegistry['knownHardware']> | null = null;
    // Tasks by their new note: one UPDATE per distinct note, in one group commit.
    const changes = new Map<string | null, number[]>();
    for (const t of this.queue.values()) {
      if (t.reviewedVersion === version) continue;
      t.reviewedVersion = version;
      known ??= this.deps.registry.knownHardware();
      const reason = unschedulableReason(t, known);
      if (reason === t.unschedulable) continue;
      t.unschedulable = reason;
      const ids = changes.get(reason);
      if (ids) ids.push(t.id);
      else changes.set(reason, [t.id]);
    }
    if (changes.size === 0 || this.closed) return;
    try {
      await this.deps.writes.run(async (trx) => {
        for (const [reason, ids] of changes) await setUnschedulableReason(trx, ids, reason);
      });
    } catch (err) {
      // A note is advice: losing one (at shutdown, in an outage) only delays it to the next review.
      if (!this.closed) this.deps.logger.warn({ err }, 'unschedulable notes not written');
    }
  }

  private enqueueRow(r: TaskRow, ranks?: number[]): void {
    const existing = this.queue.get(r.id);
    this.changes++;
    const requirements = (parseJson(r.requirements) ?? {}) as PendingTask['requirements'];
    const worldSize = Number(r.world_size);
    this.queue.set({
      id: r.id,
      partial: ranks !== undefined,
      ranks,
      type: r.type,
      priority: Number(r.priority ?? 0),
      requirements,
      worldSize,
      classKey: requirementClass({ type: r.type, requirements, worldSize, ranks }),
      queuedAt: existing?.queuedAt ?? this.deps.clock.now().getTime(),
      attempts: Number(r.attempts),
      name: r.name,
      ...queuedConfig(parseJson(r.config), worldSize, ranks !== undefined),
      unschedulable: r.unschedulable_reason,
      reviewedVersion: -1,
    });
  }

  private async pass(): Promise<void> {
    if (this.closed || this.queue.size === 0) return;
    try {
      const registry = this.deps.registry;
      const tasks = function* (queue: PendingQueue<QueuedTask>) {
        for (const t of queue.ordered()) {
          // A re-placed rank never lands next to another rank of its task.
          if (t.partial) t.excludeClients = new Set(registry.leasesOf(t.id).map((l) => l.clientId));
          yield t;
        }
      };
      const capacities = registry.capacities(this.deps.maxTasksPerClient);
      // Placements depend only on the queue and the clients' free slots, cordons and hardware:
      // when none of them changed since a pass that placed nothing, neither would this one.
      // That costs the number of clients, not the length of the queue.
      let signature = `${this.changes}/${registry.hardwareVersion}/${this.farmVersion}`;
      for (const c of capacities) signature += `/${c.id}:${c.freeSlots}:${c.cordoned ? 1 : 0}`;
      if (signature === this.idleSignature) {
        this.deps.metrics.dispatchPasses.inc({ outcome: 'skipped' });
        return;
      }
      const placements = placeTasks(tasks(this.queue), capacities);
      if (placements.length > 0) await this.claim(placements);
      const placed = placements.length + (await this.placeAcross(new Set(placements.map((p) => p.taskId))));
      this.idleSignature = placed === 0 ? signature : null;
      this.deps.metrics.dispatchPasses.inc({ outcome: placed === 0 ? 'idle' : 'placed' });
      if (this.queue.size > 0 && placed === 0) await this.reviewUnschedulable();
    } catch (err) {
      if (!this.closed) this.deps.logger.error({ err }, 'dispatch pass failed');
    }
  }

  /** Places the tasks with several ranks left waiting on local and remote clients together. */
  private async placeAcross(placedHere: ReadonlySet<number>): Promise<number> {
    const farm = this.deps.farm;
    if (!farm) return 0;
    const waiting = [...this.queue.ordered()].filter((t) => t.worldSize > 1 && !placedHere.has(t.id));
    if (waiting.length === 0) return 0;
    const local = this.deps.registry.capacities(this.deps.maxTasksPerClient);
    const { placements, remote } = await placeAcross(waiting, local, farm);
    if (placements.length > 0) await this.claim(placements, remote);
    return placements.length;
  }

  /**
   * Claims placed tasks in one group transaction, then sends them: to a client of another
   * instance (`remote`) through the bus, to be sent by the instance holding its socket.
   */
  private async claim(placements: Placement[], remote = new Map<string, RemoteClient>()): Promise<void> {
    const { registry, writes, clock } = this.deps;
    const byTask = new Map<number, Placement[]>();
    for (const p of placements) byTask.set(p.taskId, [...(byTask.get(p.taskId) ?? []), p]);
    const claims = [...byTask.entries()].map(async ([taskId, ps]) => {
      const task = this.queue.get(taskId);
      if (!task) return;
      this.queue.delete(taskId);
      // A client already holding this task (a stale queue entry) never gets it twice.
      if (ps.some((p) => registry.get(p.clientId)?.leases.has(taskId))) {
        this.deps.logger.warn({ taskId }, 'placement onto a client that already holds the task skipped');
        return;
      }
      // Reserve the slots now so a concurrent pass cannot place on them too.
      const provisional = ps.map((p) => (remote.has(p.clientId) ? null : this.reserve(p)));
      const ranks = ps.map((p) => {
        const r = remote.get(p.clientId);
        return r ? { ...p, via: { instanceId: r.instanceId, maxTasks: r.maxTasks } } : p;
      });
      const now = clock.now();
      const claimed = await (
        task.partial
          ? writes.run((trx) => claimRanks(trx, taskId, ranks, now))
          : writes.submit(claimTasks, { taskId, placements: ranks, attempts: task.attempts, now })
      ).catch((err: unknown) => {
        // Another instance re-placed the rank in the same instant: both read the same next
        // attempt, and the (task, rank, attempt) key let the first commit win.
        if (isUniqueViolation(err)) this.deps.logger.info({ taskId }, 'claim lost to another instance');
        else this.deps.logger.error({ err, taskId }, 'claim failed');
        return null;
      });
      const reserved = provisional.filter((l): l is Lease => l !== null);
      if (!claimed) {
        for (const l of reserved) {
          const leases = registry.get(l.clientId)?.leases;
          if (leases?.get(taskId) === l) leases.delete(taskId);
        }
        // Someone else (another instance, a cancel) changed it: re-read the truth. Lost ranks
        // (a re-read would drop them: their task runs) are queued again for a pass a moment later.
        if (!task.partial) await this.refresh(taskId);
        else if (await this.queueRanks(taskId, task.ranks ?? []))
          setTimeout(() => this.schedule(), CLAIM_RETRY_MS).unref();
        return;
      }
      // Every lease is complete before the first await below, so a client leaving from now on
      // finds real leases and its release ends them (releaseClient skips provisional ones).
      for (const [i, lease] of provisional.entries()) {
        if (!lease) continue;
        lease.attempt = claimed.attempts[i] as number;
        lease.assignmentId = claimed.ids[i] as number;
        lease.worldSize = task.worldSize;
      }
      // A client that left while the claim was committing (a goodbye right after its last
      // ack) has had its leases released already, without this one: it is ended below.
      const leftBehind = reserved.filter((l) => registry.get(l.clientId)?.leases.get(taskId) !== l);
      for (const [i, p] of ps.entries()) {
        const lease = provisional[i];
        if (lease && leftBehind.includes(lease)) continue;
        const attempt = claimed.attempts[i] as number;
        const message = { type: 'task' as const, data: await this.frame(task, p.rank, attempt) };
        if (lease) registry.get(p.clientId)?.send?.(message);
        else
          await this.deps.bus.publish('cluster.push', {
            client_id: p.clientId,
            task_id: taskId,
            attempt,
            message,
          });
      }
      this.deps.metrics.dispatchLatency.observe((clock.now().getTime() - task.queuedAt) / 1000);
      await announceStatus(this.deps.bus, taskId, 'running');
      // After the `running` news, so the news of the release (pending again) comes last.
      for (const lease of leftBehind) {
        const reason = `client ${lease.clientId} left before attempt ${lease.attempt} of task ${taskId} reached it`;
        this.deps.logger.info(
          { taskId, client: lease.clientId },
          'assignment for a departed client released',
        );
        await this.releaseLeftBehind?.(lease, reason);
      }
    });
    await Promise.all(claims);
  }

  /** The `task` frame of one rank, with its round when it trains. */
  private async frame(task: QueuedTask, rank: number, attempt: number): Promise<TaskData> {
    const data: TaskData = taskFrameData({
      id: task.id,
      type: task.type,
      name: task.name,
      config: task.config,
      requirements: task.requirements as Record<string, unknown>,
      attempt,
      rank,
      worldSize: task.worldSize,
    });
    const training = await this.deps.training?.describeTraining(task.id, task.config, rank, attempt);
    if (training) data.training = training;
    return data;
  }

  private reserve(p: Placement): Lease {
    const lease = provisionalLease(p);
    this.deps.registry.get(p.clientId)?.leases.set(p.taskId, lease);
    return lease;
  }
}
