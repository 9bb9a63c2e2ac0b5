import type { TaskData, TaskProgressMessage, TaskResultMessage } from '../api/protocol.js';
import { announceStatus, type Bus } from '../bus/bus.js';
import { rememberFinished, type ClientRegistry, type FarmClient, type Lease } from '../clients/registry.js';
import { taskFrameData } from '../compat/task-frame.js';
import { AppError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Dispatcher, TrainingHook } from '../scheduling/dispatcher.js';
import * as assignments from '../storage/assignment-repo.js';
import type { Executor } from '../storage/executor.js';
import { findTask, recordTaskProgress } from '../storage/task-repo.js';
import { parseJson, toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import { finishLeases } from './finish.js';
import type { EndInfo, Outcome } from './lifecycle-decisions.js';
import { controlAssignment, recordProgress } from './lifecycle.js';

/** Progress reaches the database at most this often per lease (latest value wins). */
const PROGRESS_WRITE_MS = 1000;
/** One metrics-history row per lease at most this often. */
const SAMPLE_MS = 2000;
/** History rows kept per task. */
const SAMPLES_KEPT = 2000;

/**
 * Leases: every progress and result names (task, attempt) and is refused when that
 * attempt is no longer the client's; a result ends its lease exactly once; a lost client's
 * leases go back to the queue until max_attempts is used up.
 */
export class LeaseService {
  /** Results being committed, so a repeat arriving meanwhile waits for the same outcome. */
  private readonly finishing = new Map<string, Promise<void>>();
  private samplesSincePrune = 0;

  constructor(
    private readonly deps: {
      db: Executor;
      writes: WriteQueue;
      registry: ClientRegistry;
      dispatcher: Dispatcher;
      bus: Bus;
      clock: Clock;
      logger: Logger;
      training?: TrainingHook;
    },
  ) {}

  /** The live lease `clientId` holds on `taskId`, or an AppError `stale_attempt`. */
  lease(clientId: string, taskId: number, attempt: number | undefined): Lease {
    const lease = this.deps.registry.get(clientId)?.leases.get(taskId);
    if (!lease || lease.assignmentId === 0) {
      throw new AppError(
        'stale_attempt',
        `task ${taskId} is not assigned to client ${clientId} (it may have been reassigned or cancelled)`,
      );
    }
    if (attempt !== undefined && attempt !== lease.attempt) {
      throw new AppError(
        'stale_attempt',
        `attempt ${attempt} of task ${taskId} is stale; the current attempt is ${lease.attempt}`,
      );
    }
    return lease;
  }

  /** Records progress: in memory at once, in the database throttled, history sampled. */
  async progress(clientId: string, taskId: number, msg: TaskProgressMessage): Promise<void> {
    const lease = this.lease(clientId, taskId, msg.attempt);
    const firstProgress = lease.status === 'assigned';
    if (firstProgress) lease.status = 'training';
    lease.progress = msg.progress;
    if (msg.metrics) lease.metrics = msg.metrics;
    if (msg.round !== undefined) lease.round = msg.round;
    lease.dirty = true;
    const now = this.deps.clock.now().getTime();
    if (firstProgress || now - lease.lastWrite >= PROGRESS_WRITE_MS) await this.flushLease(lease);
    void this.deps.bus.publish('task.changed', {
      task_id: taskId,
      status: 'running',
      progress: msg.progress,
    });
  }

  /** Writes every lease whose latest progress is not in the database yet (called on a timer). */
  async flushDirty(): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const c of this.deps.registry.all()) {
      for (const l of c.leases.values()) if (l.dirty && l.assignmentId) writes.push(this.flushLease(l));
    }
    await Promise.all(writes);
  }

  private async flushLease(lease: Lease): Promise<void> {
    const now = this.deps.clock.now();
    const t = now.getTime();
    lease.dirty = false;
    lease.lastWrite = t;
    const sample = t - lease.lastSample >= SAMPLE_MS;
    if (sample) lease.lastSample = t;
    const prune = sample && ++this.samplesSincePrune >= 100;
    if (prune) this.samplesSincePrune = 0;
    const { taskId, assignmentId, progress, metrics } = lease;
    await this.deps.writes.run(async (trx) => {
      await recordProgress(trx, assignmentId, progress, now);
      // A multi-rank task shows the mean progress of its ranks; rank 0 writes it.
      if (lease.rank === 0) {
        await recordTaskProgress(trx, taskId, progress, metrics ?? {}, toDbTime(now));
      }
      if (sample) {
        await assignments.insertMetricSample(trx, {
          task_id: taskId,
          at: toDbTime(now, true),
          rank: lease.rank,
          attempt: lease.attempt,
          round: lease.round,
          progress,
          metrics: metrics ?? {},
        });
      }
      if (prune) await assignments.pruneMetricSamples(trx, taskId, SAMPLES_KEPT);
    });
  }

  /**
   * Ends a lease with the client's result, exactly once: a repeat of the same result is
   * acknowledged as a duplicate and changes nothing. Resolves after the commit.
   */
  async result(clientId: string, taskId: number, msg: TaskResultMessage): Promise<{ duplicate: boolean }> {
    const client = this.deps.registry.get(clientId);
    const lease = client?.leases.get(taskId);
    const key = `${taskId}:${clientId}`;
    const inFlight = this.finishing.get(key);
    if (inFlight && (!lease || lease.assignmentId === 0)) {
      await inFlight;
      return { duplicate: true };
    }
    if (!lease || lease.assignmentId === 0 || (msg.attempt !== undefined && msg.attempt !== lease.attempt)) {
      if (await this.alreadyFinished(clientId, taskId, msg.attempt)) return { duplicate: true };
      this.lease(clientId, taskId, msg.attempt); // throws the precise stale_attempt error
    }
    const l = lease as Lease;
    client?.leases.delete(taskId);
    const done = this.finish(l, msg.status, {
      metrics: msg.metrics ?? l.metrics ?? null,
      result: msg.result ?? null,
      checkpoint_path: msg.checkpoint_path ?? null,
      error_log: msg.error_log ?? msg.error ?? null,
    });
    this.finishing.set(key, done);
    try {
      await done;
    } catch (err) {
      // Not stored (the database is unreachable): the lease stays, so the client's retry of
      // this result can still end it. Were it dropped, the retry would be refused as stale
      // and the task would stay running for good.
      if (client && !client.leases.has(taskId)) client.leases.set(taskId, l);
      throw err;
    } finally {
      this.finishing.delete(key);
    }
    return { duplicate: false };
  }

  /** Gives up every lease a client holds (silent past CONNECTION_TIMEOUT, or gone for good). */
  async releaseClient(client: FarmClient, reason: string): Promise<void> {
    const leases = [...client.leases.values()].filter((l) => l.assignmentId !== 0);
    client.leases.clear();
    await Promise.all(leases.map((l) => this.finish(l, 'lost', { error_log: reason })));
  }

  /** Ends one lease as lost (a training rank that missed its round's deadline): the rank is re-placed. */
  async releaseLease(lease: Lease, reason: string): Promise<void> {
    const client = this.deps.registry.get(lease.clientId);
    if (client?.leases.get(lease.taskId) !== lease) return;
    client.leases.delete(lease.taskId);
    client.send?.({ type: 'stop', task_id: lease.taskId, reason });
    await this.finish(lease, 'lost', { error_log: reason });
  }

  /**
   * Ends, as lost, a live lease that no client here holds: one found stranded by the sweep, or
   * a dead instance's. Ends it only if still live.
   */
  async releaseDetached(lease: Lease, reason: string): Promise<void> {
    await this.finish(lease, 'lost', { error_log: reason });
  }

  /**
   * Ends a lease whose claim committed after its client had left (the dispatcher sent it
   * nothing): placed again without counting the attempt. Ends it only if still live.
   */
  async releaseUndelivered(lease: Lease, reason: string): Promise<void> {
    await this.finish(lease, 'undelivered', { error_log: reason });
  }

  private async alreadyFinished(
    clientId: string,
    taskId: number,
    attempt: number | undefined,
  ): Promise<boolean> {
    const rows = await assignments.listAssignments(this.deps.db, taskId);
    return rows.some(
      (r) =>
        r.client_id === clientId &&
        (attempt === undefined || r.attempt === attempt) &&
        (r.status === 'completed' || r.status === 'failed'),
    );
  }

  /** One transaction (shared with the other leases ending now): the assignment ends, the task completes, retries or fails. */
  private async finish(lease: Lease, outcome: Outcome, info: EndInfo): Promise<void> {
    const now = this.deps.clock.now();
    const { settlement, after } = await this.deps.writes.submit(finishLeases, { lease, outcome, info, now });
    if (settlement.kind === 'requeue_task') await this.deps.dispatcher.refresh(lease.taskId);
    if (settlement.kind === 'requeue_rank')
      await this.deps.dispatcher.requeueRanks(lease.taskId, [settlement.rank]);
    if (settlement.kind === 'failed') await this.control(lease.taskId, 'stop');
    // Every instance: the task's other clients stop, its round (wherever it runs) ends.
    if (settlement.kind === 'failed' || settlement.kind === 'requeue_task') {
      const action = settlement.kind === 'failed' ? 'stop' : 'requeue';
      await this.deps.bus.publish('task.control', { task_id: lease.taskId, action });
    }
    this.deps.dispatcher.schedule();
    const state = after ?? (await findTask(this.deps.db, lease.taskId));
    if (state) await announceStatus(this.deps.bus, lease.taskId, state.status, Number(state.progress));
  }

  /** Carries a pause, resume or stop to the clients of a task that this instance holds. */
  async control(taskId: number, action: 'pause' | 'resume' | 'stop'): Promise<void> {
    const now = this.deps.clock.now();
    for (const lease of this.deps.registry.leasesOf(taskId)) {
      const client = this.deps.registry.get(lease.clientId);
      if (action === 'stop') {
        client?.leases.delete(taskId);
        if (client) rememberFinished(client, taskId);
        if (client?.original) (client.stoppedRunning ??= new Set()).add(taskId);
      } else lease.status = action === 'pause' ? 'paused' : 'training';
      if (lease.assignmentId) {
        await this.deps.writes.run((trx) => controlAssignment(trx, lease.assignmentId, action, now));
      }
      client?.send?.({ type: action, task_id: taskId });
    }
    if (action === 'stop') this.deps.dispatcher.schedule();
  }

  /** A task's world size, read when a lease does not carry it (leases restored at start). */
  async worldSize(taskId: number): Promise<number> {
    const row = await findTask(this.deps.db, taskId);
    return Math.max(1, Number(row?.world_size ?? 1));
  }

  /** Sends a reconnecting client the tasks it still holds (paused ones marked so). */
  async resend(client: FarmClient): Promise<void> {
    for (const lease of client.leases.values()) {
      if (!lease.assignmentId) continue;
      const row = await findTask(this.deps.db, lease.taskId);
      if (!row) continue;
      const config = (parseJson(row.config) ?? {}) as Record<string, unknown>;
      const data: TaskData = taskFrameData({
        id: row.id,
        type: row.type,
        name: row.name,
        config,
        requirements: (parseJson(row.requirements) ?? {}) as Record<string, unknown>,
        attempt: lease.attempt,
        rank: lease.rank,
        worldSize: Number(row.world_size),
      });
      if (lease.status === 'paused' || row.status === 'paused') data.paused = true;
      const training = await this.deps.training?.describeTraining(row.id, config, lease.rank, lease.attempt);
      if (training) data.training = training;
      client.send?.({ type: 'task', data });
    }
  }
}
