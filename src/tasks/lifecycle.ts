/**
 * The task lifecycle: the one owner of every status change of tasks and assignments. Each
 * transition (claim, complete, retry, re-place a rank, fail, cancel, pause, resume, finish a
 * training) is one named conditional write in storage (storage/lifecycle-repo.ts), allowed only
 * from the statuses the state machine (task-state.ts) lets the server leave for its target.
 * Every function runs inside the caller's transaction (a group commit, mostly), so a
 * transition commits together with whatever else the caller writes.
 *
 * The decisions (does a failure retry, re-place its rank or fail the task; what the result
 * is) are pure functions in lifecycle-decisions.ts, unit-tested alone.
 */
import type { Lease } from '../clients/registry.js';
import type { Executor } from '../storage/executor.js';
import { insertAssignment, insertAssignments, LIVE_ASSIGNMENT } from '../storage/assignment-repo.js';
import * as store from '../storage/lifecycle-repo.js';
import type { AssignmentStatus, TaskStatus } from '../storage/schema.js';
import { insertTaskEvent } from '../storage/task-repo.js';
import { liveRanks } from '../storage/training-repo.js';
import { toDbTime } from '../storage/values.js';
import {
  decideAfterFailure,
  resultOf,
  systemFrom,
  type EndInfo,
  type Outcome,
  type Settlement,
} from './lifecycle-decisions.js';
import { userMayChange } from './task-state.js';

/** Where a task's lease may end or its clients may hold work. */
const LIVE: readonly TaskStatus[] = ['running', 'paused'];
const COMPLETE_FROM = systemFrom(LIVE, 'completed');
const RETRY_FROM = systemFrom(LIVE, 'pending');
const FAIL_FROM = systemFrom(LIVE, 'failed');
const ERROR_FROM = systemFrom(LIVE, 'error');
/** Re-placing a rank changes no status: the task only has to be live still. */
const REPLACE_RANK_FROM = LIVE;
const CLAIM_FROM = systemFrom(['pending'], 'running');
/**
 * A training's last round completes the task, or, when its ranks' results completed it first,
 * writes the training's result over theirs (completed stays completed).
 */
const FINISH_TRAINING_FROM: readonly TaskStatus[] = [...COMPLETE_FROM, 'completed'];

/** A client given one rank of a task. */
export interface RankPlacement {
  rank: number;
  clientId: string;
  /** Set when another instance holds the client's socket: the claim takes one of its slots. */
  via?: Omit<store.RemoteSlot, 'clientId'> | undefined;
}

/** Takes a slot on each remote client of `ps`; false when one has none left (or moved). */
async function takeRemoteSlots(db: Executor, ps: readonly RankPlacement[]): Promise<boolean> {
  for (const p of ps) {
    if (p.via && !(await store.takeRemoteSlot(db, { clientId: p.clientId, ...p.via }, LIVE_ASSIGNMENT)))
      return false;
  }
  return true;
}

/** A pending task placed on its clients (one placement per rank). */
export interface Claim {
  taskId: number;
  placements: readonly RankPlacement[];
  /** The task's `attempts` when it was read; the claim makes it attempts + 1. */
  attempts: number;
  now: Date;
}

/** The attempt and assignment id of each placement of a claim. */
export interface Claimed {
  attempts: number[];
  ids: number[];
}

/**
 * claim: pending tasks start running on their clients, with one assignment per placement.
 * One conditional statement for all: a task changes only while pending with the attempts the
 * dispatcher read, so two claimers cannot both win. A rank placed on a client of another
 * instance first takes one of that client's slots (takeRemoteSlot). Null, and nothing written
 * beyond those statements, when not every task changed or a remote client had no slot left (the
 * caller rolls back and claims one by one).
 */
export async function claimTasks(db: Executor, claims: readonly Claim[]): Promise<Claimed[] | null> {
  if (
    !(await takeRemoteSlots(
      db,
      claims.flatMap((c) => c.placements),
    ))
  )
    return null;
  const at = toDbTime((claims[0] as Claim).now);
  const changed = await store.claimTasks(
    db,
    claims.map((c) => ({
      taskId: c.taskId,
      clientId: c.placements[0]?.clientId ?? null,
      attempts: c.attempts,
    })),
    CLAIM_FROM,
    at,
  );
  if (changed !== claims.length) return null;
  const ids = await insertAssignments(
    db,
    claims.flatMap((c) =>
      c.placements.map((p) => ({
        task_id: c.taskId,
        client_id: p.clientId,
        rank: p.rank,
        attempt: c.attempts + 1,
        at: toDbTime(c.now),
      })),
    ),
  );
  let k = 0;
  return claims.map((c) => ({
    attempts: c.placements.map(() => c.attempts + 1),
    ids: c.placements.map(() => ids[k++] as number),
  }));
}

/**
 * re-place ranks: ranks of a running task start on new clients, each with its next attempt
 * (attempts count per rank). Null when the task no longer runs, a rank is held already, or
 * a remote client has no slot left.
 */
export async function claimRanks(
  db: Executor,
  taskId: number,
  ps: readonly RankPlacement[],
  now: Date,
): Promise<Claimed | null> {
  if ((await store.taskStatus(db, taskId)) !== 'running') return null;
  // A rank is held by one client at a time: one re-placed already is not placed twice.
  const held = new Set((await liveRanks(db, taskId)).map((r) => r.rank));
  if (ps.some((p) => held.has(p.rank))) return null;
  if (!(await takeRemoteSlots(db, ps))) return null;
  const attempts: number[] = [];
  const ids: number[] = [];
  for (const p of ps) {
    const attempt = await store.nextRankAttempt(db, taskId, p.rank);
    attempts.push(attempt);
    ids.push(
      await insertAssignment(db, {
        task_id: taskId,
        client_id: p.clientId,
        rank: p.rank,
        attempt,
        at: toDbTime(now),
      }),
    );
  }
  await store.countRankAttempts(db, taskId, ps.length, toDbTime(now));
  await insertTaskEvent(db, {
    task_id: taskId,
    at: toDbTime(now, true),
    kind: 'rank_assigned',
    message: ps.map((p, i) => `rank ${p.rank} attempt ${attempts[i]} assigned to ${p.clientId}`).join('; '),
  });
  return { attempts, ids };
}

/** A rank that changes client when a sampled round opens. */
export interface HandOver {
  /** The clients giving their rank up (not sampled this round), with the attempt they held. */
  leaving: readonly { clientId: string; attempt: number }[];
  /** The sampled clients that get a rank. */
  joining: readonly RankPlacement[];
  why: string;
}

/**
 * hand over ranks (a sampled round opens, docs/training.md): the leaving clients' assignments
 * end `cancelled` (no failure: the task's attempts do not grow, and the rank's retries do not
 * count them, see endLease), and each joining client gets its rank's next attempt. Null, with
 * nothing written, when the task no longer runs or a remote client has no slot left.
 */
export async function handOverRanks(
  db: Executor,
  taskId: number,
  h: HandOver,
  now: Date,
): Promise<Claimed | null> {
  if ((await store.taskStatus(db, taskId)) !== 'running') return null;
  // A client leaving one rank for another (a `fraction` round of fewer ranks) frees its own slot.
  const leaving = new Set(h.leaving.map((l) => l.clientId));
  if (
    !(await takeRemoteSlots(
      db,
      h.joining.filter((p) => !leaving.has(p.clientId)),
    ))
  )
    return null;
  const at = toDbTime(now);
  for (const l of h.leaving) {
    await store.endRankAssignment(db, { taskId, ...l }, LIVE_ASSIGNMENT, {
      status: 'cancelled',
      error: h.why,
      at,
    });
  }
  const attempts: number[] = [];
  const ids: number[] = [];
  for (const p of h.joining) {
    const attempt = await store.nextRankAttempt(db, taskId, p.rank);
    attempts.push(attempt);
    ids.push(
      await insertAssignment(db, { task_id: taskId, client_id: p.clientId, rank: p.rank, attempt, at }),
    );
  }
  return { attempts, ids };
}

/** A task's completion from the end of its (last) lease. */
function completion(taskId: number, info: EndInfo): store.TaskCompletion {
  return {
    taskId,
    result: resultOf(info),
    metrics: info.metrics === undefined || info.metrics === null ? null : JSON.stringify(info.metrics),
    checkpoint: info.checkpoint_path ?? null,
  };
}

/** The assignment status a lease ends with. */
function endStatus(outcome: Outcome): AssignmentStatus {
  if (outcome === 'undelivered') return 'cancelled';
  return outcome === 'completed' ? 'completed' : outcome === 'lost' ? 'lost' : 'failed';
}

/**
 * Ends one lease (its assignment, only if still live) and settles its task: complete (every
 * rank done), retry, re-place the rank, or fail. `none` when the lease had ended already or
 * the task no longer runs.
 */
export async function endLease(
  db: Executor,
  lease: Lease,
  outcome: Outcome,
  info: EndInfo,
  now: Date,
): Promise<Settlement> {
  const nowDb = toDbTime(now);
  const ended = await store.endAssignment(db, lease.assignmentId, LIVE_ASSIGNMENT, {
    status: endStatus(outcome),
    progress: outcome === 'completed' ? 100 : lease.progress,
    error: outcome === 'completed' ? null : info.error_log,
    checkpoint: info.checkpoint_path ?? null,
    at: nowDb,
  });
  if (!ended) return { kind: 'none' };
  const task = await store.readTaskFate(db, lease.taskId);
  if (!task || !LIVE.includes(task.status)) return { kind: 'none' };
  const at = toDbTime(now, true);
  const worldSize = Number(task.world_size);
  if (outcome === 'completed') {
    if (worldSize > 1) {
      const done = await store.countCompletedRanks(db, lease.taskId);
      if (done < worldSize) {
        await insertTaskEvent(db, {
          task_id: lease.taskId,
          at,
          kind: 'rank_completed',
          message: `rank ${lease.rank} completed by ${lease.clientId} (${done}/${worldSize})`,
        });
        return { kind: 'none' };
      }
    }
    await store.completeTask(db, completion(lease.taskId, info), COMPLETE_FROM, nowDb);
    await insertTaskEvent(db, {
      task_id: lease.taskId,
      at,
      kind: 'completed',
      message: `completed by ${lease.clientId} (attempt ${lease.attempt})`,
    });
    return { kind: 'none' };
  }
  // A sampled task's rank changes client between rounds: those hand-overs are not attempts used.
  const handedOver = worldSize > 1 ? await store.countHandedOver(db, lease.taskId, lease.rank) : 0;
  const d = decideAfterFailure(lease, outcome, info.error_log, task, handedOver);
  const attempt = { id: lease.taskId, errorLog: d.errorLog, at: nowDb };
  if (d.kind === 'replace_rank') await store.noteRankRetry(db, attempt, REPLACE_RANK_FROM);
  else if (d.kind === 'retry') await store.retryTask(db, { ...attempt, uncount: d.uncount }, RETRY_FROM);
  else {
    const from = d.status === 'error' ? ERROR_FROM : FAIL_FROM;
    await store.failTask(db, { ...attempt, status: d.status, clientId: lease.clientId }, from);
  }
  await insertTaskEvent(db, { task_id: lease.taskId, at, ...d.event });
  if (d.kind === 'replace_rank') return { kind: 'requeue_rank', rank: lease.rank };
  return d.kind === 'retry' ? { kind: 'requeue_task' } : { kind: 'failed' };
}

/** One completed lease of a single-rank task, for `completeLeases`. */
export interface Completed {
  lease: Lease;
  info: EndInfo;
}

/**
 * Completes single-rank tasks from their leases' results, all at once: one statement ends the
 * assignments, one completes the tasks. Returns the leases whose task completed, or null when
 * not every assignment was still live (the caller then ends them one by one). A task no longer
 * running or paused (cancelled while its result was on its way) keeps its status.
 */
export async function completeLeases(
  db: Executor,
  items: readonly Completed[],
  now: Date,
): Promise<Completed[] | null> {
  const nowDb = toDbTime(now);
  const checkpoints = new Map(items.map((i) => [i.lease.assignmentId, i.info.checkpoint_path ?? null]));
  const ended = await store.completeAssignments(db, checkpoints, LIVE_ASSIGNMENT, nowDb);
  if (ended !== items.length) return null;
  const changed = await store.completeTasks(
    db,
    items.map((i) => completion(i.lease.taskId, i.info)),
    COMPLETE_FROM,
    nowDb,
  );
  if (changed === items.length) return [...items];
  const rows = await store.taskStatuses(
    db,
    items.map((i) => i.lease.taskId),
  );
  const done = new Set(rows.filter((r) => r.status === 'completed').map((r) => Number(r.id)));
  return items.filter((i) => done.has(i.lease.taskId));
}

/**
 * Fails a task for good (a training that cannot go on), adding `why` to its error log. False
 * when it was no longer running or paused. Its clients are told to stop by the caller.
 */
export async function failTask(db: Executor, taskId: number, why: string, now: Date): Promise<boolean> {
  const task = await store.readTaskFate(db, taskId);
  const failed = await store.failTask(
    db,
    {
      id: taskId,
      status: 'failed',
      errorLog: task?.error_log ? `${task.error_log}\n${why}` : why,
      at: toDbTime(now),
    },
    FAIL_FROM,
  );
  await insertTaskEvent(db, { task_id: taskId, at: toDbTime(now, true), kind: 'failed', message: why });
  return failed;
}

/** What a training's last round leaves: its result, metrics and checkpoint. */
export interface TrainingEnd {
  taskId: number;
  /** The task's metrics (the last round's, with its number). */
  metrics: unknown;
  result: unknown;
  checkpoint: string | null;
}

/** Finishes a training: the task completes with its result, its live assignments complete. */
export async function finishTraining(db: Executor, end: TrainingEnd, now: Date): Promise<void> {
  const at = toDbTime(now);
  await store.finishTraining(
    db,
    {
      id: end.taskId,
      metrics: JSON.stringify(end.metrics),
      result: JSON.stringify(end.result),
      checkpoint: end.checkpoint,
      at,
    },
    FINISH_TRAINING_FROM,
  );
  await store.completeTaskAssignments(db, end.taskId, LIVE_ASSIGNMENT, at);
}

/** A status change a user asked for, as the state machine resolved it. */
export interface UserChange {
  taskId: number;
  /** The status the task was read in: the change is made only if it still is. */
  from: TaskStatus;
  /** What the task becomes (resolveUserTarget of what was asked). */
  to: TaskStatus;
  /** What the user asked for. */
  requested: TaskStatus;
  by: string;
  now: Date;
}

/**
 * cancel, pause, resume or retry, as a user asked: made only while the task is still in the
 * status it was read in (false otherwise), with its event.
 */
export async function changeByUser(db: Executor, c: UserChange): Promise<boolean> {
  if (!userMayChange(c.from, c.to)) throw new Error(`a user may not change a task from ${c.from} to ${c.to}`);
  const at = toDbTime(c.now);
  const from = [c.from];
  let changed: boolean;
  if (c.to === 'cancelled') changed = await store.cancelTask(db, c.taskId, from, at);
  else if (c.to === 'paused') changed = await store.pauseTask(db, c.taskId, from, at);
  else if (c.to === 'running') changed = await store.resumeTask(db, c.taskId, from, at);
  else {
    const fresh = c.from === 'failed' || c.from === 'error' || c.from === 'cancelled';
    changed = await store.requeueTask(db, c.taskId, from, at, fresh);
  }
  if (!changed) return false;
  await insertTaskEvent(db, {
    task_id: c.taskId,
    at: toDbTime(c.now, true),
    kind: c.to,
    message: `${c.from} -> ${c.to} by ${c.by}`,
    data: { from: c.from, to: c.to, requested: c.requested },
  });
  return true;
}

/** Assignments a client is still working on: not paused. */
const WORKING: readonly AssignmentStatus[] = ['assigned', 'training'];

/** A lease's progress: its assignment, while working on it, is training (its first progress starts it). */
export function recordProgress(
  db: Executor,
  assignmentId: number,
  progress: number,
  now: Date,
): Promise<boolean> {
  return store.setAssignment(db, assignmentId, WORKING, {
    status: 'training',
    progress,
    updated_at: toDbTime(now),
  });
}

/** pause, resume or stop one live assignment, as its task was (stop: cancelled). */
export function controlAssignment(
  db: Executor,
  assignmentId: number,
  action: 'pause' | 'resume' | 'stop',
  now: Date,
): Promise<boolean> {
  const at = toDbTime(now);
  return store.setAssignment(db, assignmentId, LIVE_ASSIGNMENT, {
    status: action === 'stop' ? 'cancelled' : action === 'pause' ? 'paused' : 'training',
    updated_at: at,
    finished_at: action === 'stop' ? at : null,
  });
}
