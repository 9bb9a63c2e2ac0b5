/**
 * The writes that change the status of tasks and assignments, one conditional statement per
 * transition: each changes a row only while it is in one of the statuses `from` it is given,
 * which is what keeps two racing changes (a result and a cancel, two instances) from both
 * winning. The statuses each transition may start from come from the task state machine
 * (src/tasks/lifecycle.ts decides and calls these; nothing else changes a status).
 */
import { sql, type UpdateObject } from 'kysely';
import { updateAssignmentIf } from './assignment-repo.js';
import { perRow } from './bulk.js';
import type { Executor } from './executor.js';
import type { AssignmentStatus, Database, TaskStatus } from './schema.js';
import { updateTaskIf } from './task-repo.js';

const moveTask = updateTaskIf;

/**
 * Changes tasks `ids` in one statement, each only while in one of `from` and, when `attempts`
 * is given, with the attempts read for it. Returns how many changed.
 */
async function moveTasks(
  db: Executor,
  ids: number[],
  from: readonly TaskStatus[],
  changes: UpdateObject<Database, 'tasks'>,
  attempts?: ReadonlyMap<number, number>,
): Promise<number> {
  let q = db
    .updateTable('tasks')
    .set(changes)
    .where('id', 'in', ids)
    .where('status', 'in', from as TaskStatus[]);
  if (attempts) q = q.where('attempts', '=', perRow(attempts));
  const res = await q.executeTakeFirst();
  return Number(res.numUpdatedRows);
}

/** What the lifecycle reads of a task before deciding its fate. */
export interface TaskFate {
  status: TaskStatus;
  attempts: number;
  max_attempts: number;
  error_log: string | null;
  world_size: number;
}

export async function readTaskFate(db: Executor, id: number): Promise<TaskFate | undefined> {
  return db
    .selectFrom('tasks')
    .select(['status', 'attempts', 'max_attempts', 'error_log', 'world_size'])
    .where('id', '=', id)
    .executeTakeFirst();
}

/** The statuses of some tasks (missing ones are absent). */
export async function taskStatuses(
  db: Executor,
  ids: readonly number[],
): Promise<{ id: number; status: TaskStatus }[]> {
  return db.selectFrom('tasks').select(['id', 'status']).where('id', 'in', ids).execute();
}

/** How many distinct ranks of a task have a completed assignment. */
export async function countCompletedRanks(db: Executor, taskId: number): Promise<number> {
  const done = await db
    .selectFrom('task_assignments')
    .select((eb) => eb.fn.count<number>('rank').distinct().as('n'))
    .where('task_id', '=', taskId)
    .where('status', '=', 'completed')
    .executeTakeFirstOrThrow();
  return Number(done.n);
}

/** A pending task as claimed: its first client, and its `attempts` as the dispatcher read them. */
export interface TaskClaim {
  taskId: number;
  clientId: string | null;
  attempts: number;
}

/**
 * claim: `pending` tasks become `running`, each only while its `attempts` are still those
 * read. One statement for all; returns how many tasks it changed.
 */
export async function claimTasks(
  db: Executor,
  claims: readonly TaskClaim[],
  from: readonly TaskStatus[],
  at: string,
): Promise<number> {
  return moveTasks(
    db,
    claims.map((c) => c.taskId),
    from,
    {
      status: 'running',
      client_id: perRow(new Map(claims.map((c) => [c.taskId, c.clientId]))),
      attempts: sql<number>`attempts + 1`,
      started_at: at,
      updated_at: at,
      unschedulable_reason: null,
    },
    new Map(claims.map((c) => [c.taskId, c.attempts])),
  );
}

/** A slot claimed on a client whose socket another instance holds. */
export interface RemoteSlot {
  clientId: string;
  /** The instance holding its socket, as placement read it. */
  instanceId: string;
  /** Its max_tasks: the claim takes a slot only while it has fewer live assignments. */
  maxTasks: number;
}

/**
 * claim a slot of a remote client: true only while the client is still connected through the
 * instance placement read and has fewer than `maxTasks` assignments in `live`. The statement
 * writes its row (the holder it already has), so the row stays locked until the claim commits:
 * two instances claiming the same client go one after the other, and the second counts the
 * first one's assignment (InnoDB reads the subquery of an UPDATE with a lock, not a snapshot).
 */
export async function takeRemoteSlot(
  db: Executor,
  slot: RemoteSlot,
  live: readonly AssignmentStatus[],
): Promise<boolean> {
  const res = await db
    .updateTable('clients')
    .set({ instance_id: slot.instanceId })
    .where('id', '=', slot.clientId)
    .where('connected', '=', 1)
    .where('instance_id', '=', slot.instanceId)
    .where(
      (eb) =>
        eb
          .selectFrom('task_assignments')
          .select(eb.fn.countAll<number>().as('n'))
          .where('client_id', '=', slot.clientId)
          .where('status', 'in', [...live]),
      '<',
      slot.maxTasks,
    )
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

/** The status of one task, or undefined when it is gone. */
export async function taskStatus(db: Executor, id: number): Promise<TaskStatus | undefined> {
  const row = await db.selectFrom('tasks').select(['status']).where('id', '=', id).executeTakeFirst();
  return row?.status;
}

/** The attempt a rank's next assignment gets: one more than its newest. */
export async function nextRankAttempt(db: Executor, taskId: number, rank: number): Promise<number> {
  const prev = await db
    .selectFrom('task_assignments')
    .select((eb) => eb.fn.max('attempt').as('a'))
    .where('task_id', '=', taskId)
    .where('rank', '=', rank)
    .executeTakeFirst();
  return Number(prev?.a ?? 0) + 1;
}

/**
 * Ends the live assignment of one rank attempt on one client (a sampled rank handed over, see
 * lifecycle's handOverRanks), whichever instance holds the client. False when it was not live.
 */
export async function endRankAssignment(
  db: Executor,
  a: { taskId: number; clientId: string; attempt: number },
  from: readonly AssignmentStatus[],
  end: { status: AssignmentStatus; error: string; at: string },
): Promise<boolean> {
  const res = await db
    .updateTable('task_assignments')
    .set({ status: end.status, error: end.error, updated_at: end.at, finished_at: end.at })
    .where('task_id', '=', a.taskId)
    .where('client_id', '=', a.clientId)
    .where('attempt', '=', a.attempt)
    .where('status', 'in', [...from])
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

/** How many times a rank of a live task was handed over to another client (ended `cancelled`). */
export async function countHandedOver(db: Executor, taskId: number, rank: number): Promise<number> {
  const row = await db
    .selectFrom('task_assignments')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('task_id', '=', taskId)
    .where('rank', '=', rank)
    .where('status', '=', 'cancelled')
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/** Re-placed ranks of a running task count `n` more attempts (the status stays). */
export async function countRankAttempts(db: Executor, taskId: number, n: number, at: string): Promise<void> {
  await db
    .updateTable('tasks')
    .set({ attempts: sql<number>`attempts + ${n}`, updated_at: at })
    .where('id', '=', taskId)
    .execute();
}

/** A single-rank task's completion: its result, and its metrics and checkpoint when known. */
export interface TaskCompletion {
  taskId: number;
  result: string;
  metrics: string | null;
  checkpoint: string | null;
}

/** complete, many at once: one statement; returns how many tasks it changed. */
export async function completeTasks(
  db: Executor,
  done: readonly TaskCompletion[],
  from: readonly TaskStatus[],
  at: string,
): Promise<number> {
  const results = new Map(done.map((d) => [d.taskId, d.result]));
  const metrics = new Map<number, string>();
  const checkpoints = new Map<number, string>();
  for (const d of done) {
    if (d.metrics !== null) metrics.set(d.taskId, d.metrics);
    if (d.checkpoint) checkpoints.set(d.taskId, d.checkpoint);
  }
  return moveTasks(
    db,
    done.map((d) => d.taskId),
    from,
    {
      status: 'completed',
      progress: 100,
      result: perRow(results),
      ...(metrics.size > 0 ? { metrics: perRow(metrics, sql`metrics`) } : {}),
      ...(checkpoints.size > 0 ? { checkpoint_path: perRow(checkpoints, sql`checkpoint_path`) } : {}),
      finished_at: at,
      updated_at: at,
    },
  );
}

/** complete, one task. */
export function completeTask(
  db: Executor,
  done: TaskCompletion,
  from: readonly TaskStatus[],
  at: string,
): Promise<boolean> {
  return moveTask(db, done.taskId, from, {
    status: 'completed',
    progress: 100,
    result: done.result,
    metrics: done.metrics ?? undefined,
    checkpoint_path: done.checkpoint ?? undefined,
    finished_at: at,
    updated_at: at,
  });
}

/** A task's error log, grown by the attempt that failed. */
export interface FailedAttempt {
  id: number;
  errorLog: string | null;
  at: string;
}

/** re-place a rank: the task keeps running; the failed attempt is added to its error log. */
export function noteRankRetry(db: Executor, f: FailedAttempt, from: readonly TaskStatus[]): Promise<boolean> {
  return moveTask(db, f.id, from, { error_log: f.errorLog, updated_at: f.at });
}

/**
 * retry: the task goes back to the queue, its error log kept; `uncount` gives back the attempt
 * its claim counted (the task never reached the client).
 */
export function retryTask(
  db: Executor,
  f: FailedAttempt & { uncount?: boolean | undefined },
  from: readonly TaskStatus[],
): Promise<boolean> {
  return moveTask(db, f.id, from, {
    status: 'pending',
    ...(f.uncount ? { attempts: sql<number>`CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END` } : {}),
    error_log: f.errorLog,
    client_id: null,
    finished_at: null,
    updated_at: f.at,
  });
}

/** fail: the task ends `failed` (its work failed) or `error` (it could not run). */
export function failTask(
  db: Executor,
  f: FailedAttempt & { status: 'failed' | 'error'; clientId?: string },
  from: readonly TaskStatus[],
): Promise<boolean> {
  return moveTask(db, f.id, from, {
    status: f.status,
    error_log: f.errorLog,
    ...(f.clientId === undefined ? {} : { client_id: f.clientId }),
    finished_at: f.at,
    updated_at: f.at,
  });
}

/** finish a training: the task completes with the training's result and last round's metrics. */
export async function finishTraining(
  db: Executor,
  f: { id: number; metrics: string; result: string; checkpoint: string | null; at: string },
  from: readonly TaskStatus[],
): Promise<void> {
  await moveTask(db, f.id, from, {
    metrics: f.metrics,
    updated_at: f.at,
    ...(f.checkpoint ? { checkpoint_path: f.checkpoint } : {}),
    status: 'completed',
    progress: 100,
    finished_at: f.at,
    result: f.result,
  });
}

/** cancel: the task ends `cancelled` (its clients are told to stop by the caller). */
export function cancelTask(
  db: Executor,
  id: number,
  from: readonly TaskStatus[],
  at: string,
): Promise<boolean> {
  return moveTask(db, id, from, { status: 'cancelled', updated_at: at, finished_at: at });
}

/** pause: the task and its clients' work wait (the clients are told by the caller). */
export function pauseTask(
  db: Executor,
  id: number,
  from: readonly TaskStatus[],
  at: string,
): Promise<boolean> {
  return moveTask(db, id, from, { status: 'paused', updated_at: at });
}

/** resume: a paused task whose clients still hold its work runs again. */
export function resumeTask(
  db: Executor,
  id: number,
  from: readonly TaskStatus[],
  at: string,
): Promise<boolean> {
  return moveTask(db, id, from, { status: 'running', updated_at: at });
}

/**
 * requeue: the task goes back to the queue; one that had ended (`fresh`) starts over, with
 * its attempts, progress, client and result cleared.
 */
export function requeueTask(
  db: Executor,
  id: number,
  from: readonly TaskStatus[],
  at: string,
  fresh: boolean,
): Promise<boolean> {
  return moveTask(db, id, from, {
    status: 'pending',
    updated_at: at,
    ...(fresh ? { attempts: 0, progress: 0, client_id: null, finished_at: null, result: null } : {}),
  });
}

/** The end of one assignment (a lease): only while it is in one of `from`, so it ends once. */
export async function endAssignment(
  db: Executor,
  id: number,
  from: readonly AssignmentStatus[],
  end: {
    status: AssignmentStatus;
    progress: number;
    error: string | null;
    checkpoint: string | null;
    at: string;
  },
): Promise<boolean> {
  return setAssignment(db, id, from, {
    status: end.status,
    progress: end.progress,
    updated_at: end.at,
    finished_at: end.at,
    error: end.error,
    checkpoint_path: end.checkpoint,
  });
}

/** Many assignments completed at once; returns how many it changed. */
export async function completeAssignments(
  db: Executor,
  checkpoints: ReadonlyMap<number, string | null>,
  from: readonly AssignmentStatus[],
  at: string,
): Promise<number> {
  const ended = await db
    .updateTable('task_assignments')
    .set({
      status: 'completed',
      progress: 100,
      updated_at: at,
      finished_at: at,
      error: null,
      checkpoint_path: perRow(checkpoints),
    })
    .where('id', 'in', [...checkpoints.keys()])
    .where('status', 'in', from as AssignmentStatus[])
    .executeTakeFirst();
  return Number(ended.numUpdatedRows);
}

/** Every assignment of a task still in `from` completes (a training finished). */
export async function completeTaskAssignments(
  db: Executor,
  taskId: number,
  from: readonly AssignmentStatus[],
  at: string,
): Promise<void> {
  await db
    .updateTable('task_assignments')
    .set({ status: 'completed', progress: 100, finished_at: at, updated_at: at })
    .where('task_id', '=', taskId)
    .where('status', 'in', from as AssignmentStatus[])
    .execute();
}

/** A status change of a live assignment (first progress, pause, resume, stop). */
export const setAssignment = updateAssignmentIf;
