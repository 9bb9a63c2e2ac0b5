import type { Transaction } from 'kysely';
import type { Lease } from '../clients/registry.js';
import type { Database } from '../storage/schema.js';
import { insertTaskEvent, updateTaskIf } from '../storage/task-repo.js';
import { toDbTime } from '../storage/values.js';

/** How a lease ended. */
export type Outcome = 'completed' | 'failed' | 'error' | 'lost';

export interface EndInfo {
  metrics?: unknown;
  result?: unknown;
  checkpoint_path?: string | null;
  error_log: string | null;
}

/** What became of the task once one of its leases ended. */
export type Settlement =
  /** Nothing more to do (the task completed, or other ranks still run). */
  | { kind: 'none' }
  /** The whole task went back to the queue. */
  | { kind: 'requeue_task' }
  /** One rank of a running multi-rank task needs a new client. */
  | { kind: 'requeue_rank'; rank: number }
  /** The task failed for good; other ranks must stop. */
  | { kind: 'failed' };

interface TaskState {
  status: string;
  attempts: number;
  max_attempts: number;
  error_log: string | null;
  world_size: number;
}

const LIVE = ['running', 'paused'] as const;

/**
 * Decides the task's fate after one of its leases ended, inside the transaction that
 * ended the lease. A single-rank task completes, retries or fails. A multi-rank task
 * completes when every rank has completed; a lost or failed rank is re-placed on its own
 * (the other ranks carry on) while that rank has attempts left.
 */
export async function settleTask(
  trx: Transaction<Database>,
  lease: Lease,
  outcome: Outcome,
  info: EndInfo,
  task: TaskState,
  now: Date,
): Promise<Settlement> {
  const nowDb = toDbTime(now);
  const at = toDbTime(now, true);
  const worldSize = Number(task.world_size);
  if (outcome === 'completed') {
    if (worldSize > 1) {
      const done = await trx
        .selectFrom('task_assignments')
        .select((eb) => eb.fn.count<number>('rank').distinct().as('n'))
        .where('task_id', '=', lease.taskId)
        .where('status', '=', 'completed')
        .executeTakeFirstOrThrow();
      if (Number(done.n) < worldSize) {
        await insertTaskEvent(trx, {
          task_id: lease.taskId,
          at,
          kind: 'rank_completed',
          message: `rank ${lease.rank} completed by ${lease.clientId} (${done.n}/${worldSize})`,
        });
        return { kind: 'none' };
      }
    }
    await updateTaskIf(trx, lease.taskId, LIVE, {
      status: 'completed',
      progress: 100,
      result: JSON.stringify({ metrics: info.metrics ?? null, ...((info.result as object | null) ?? {}) }),
      metrics: info.metrics === undefined || info.metrics === null ? undefined : JSON.stringify(info.metrics),
      checkpoint_path: info.checkpoint_path ?? undefined,
      finished_at: nowDb,
      updated_at: nowDb,
    });
    await insertTaskEvent(trx, {
      task_id: lease.taskId,
      at,
      kind: 'completed',
      message: `completed by ${lease.clientId} (attempt ${lease.attempt})`,
    });
    return { kind: 'none' };
  }

  const why =
    outcome === 'lost'
      ? (info.error_log ?? 'client lost')
      : `${outcome}${info.error_log ? `: ${info.error_log.slice(-2000)}` : ''}`;
  const line = `attempt ${lease.attempt} on ${lease.clientId} (rank ${lease.rank}): ${why}`;
  const errorLog = task.error_log ? `${task.error_log}\n${line}` : line;
  const maxAttempts = Number(task.max_attempts);
  // Attempts count per rank: a multi-rank task is not punished for one flaky machine.
  const used = worldSize > 1 ? lease.attempt : Number(task.attempts);
  const retry = used < maxAttempts && !(worldSize > 1 && task.status === 'paused');
  if (retry && worldSize > 1) {
    await updateTaskIf(trx, lease.taskId, LIVE, { error_log: errorLog, updated_at: nowDb });
    await insertTaskEvent(trx, {
      task_id: lease.taskId,
      at,
      kind: 'rank_retry',
      message: `${line}; re-placing rank ${lease.rank} (${used}/${maxAttempts} attempts used)`,
      data: { attempt: lease.attempt, client_id: lease.clientId, outcome, rank: lease.rank },
    });
    return { kind: 'requeue_rank', rank: lease.rank };
  }
  const status = retry ? 'pending' : outcome === 'error' ? 'error' : 'failed';
  await updateTaskIf(trx, lease.taskId, LIVE, {
    status,
    error_log: retry ? errorLog : `${errorLog}\ngave up after ${used} of ${maxAttempts} attempts`,
    client_id: retry ? null : lease.clientId,
    finished_at: retry ? null : nowDb,
    updated_at: nowDb,
  });
  await insertTaskEvent(trx, {
    task_id: lease.taskId,
    at,
    kind: retry ? 'retry' : status,
    message: retry ? `${line}; retrying (${used}/${maxAttempts} attempts used)` : line,
    data: { attempt: lease.attempt, client_id: lease.clientId, outcome },
  });
  return retry ? { kind: 'requeue_task' } : { kind: 'failed' };
}
