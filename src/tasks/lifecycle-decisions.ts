/**
 * The task lifecycle's decisions, pure (no I/O) and unit-tested alone: which statuses a
 * transition may start from (checked against the state machine), whether a lease that ended
 * without completing retries its task, re-places its rank or fails the task, and what a
 * completed task's result is. src/tasks/lifecycle.ts makes the writes.
 */
import type { Lease } from '../clients/registry.js';
import type { TaskFate } from '../storage/lifecycle-repo.js';
import type { TaskStatus } from '../storage/schema.js';
import type { NewTaskEvent } from '../storage/task-repo.js';
import { systemMayChange } from './task-state.js';

/**
 * How a lease ended. `undelivered`: its claim committed after its client had left, so the
 * client never got the task (docs/architecture.md, the goodbye race): not an attempt.
 */
export type Outcome = 'completed' | 'failed' | 'error' | 'lost' | 'undelivered';

/** What a client reported with the end of its lease. */
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

/**
 * The statuses a transition to `to` starts from, each checked against the server's transitions
 * of the state machine: a write the machine does not allow cannot be made.
 */
export function systemFrom(from: readonly TaskStatus[], to: TaskStatus): readonly TaskStatus[] {
  for (const f of from) {
    if (!systemMayChange(f, to)) throw new Error(`the server may not change a task from ${f} to ${to}`);
  }
  return from;
}

/**
 * A lease whose task never reached its client: placed again whatever the attempts used, none
 * counted (a multi-rank task's rank ends `cancelled`, which its attempts leave out, as for a
 * hand-over), and the error log unchanged.
 */
function placeAgain(
  lease: Pick<Lease, 'attempt' | 'clientId' | 'rank'>,
  task: TaskFate,
  error: string | null,
): FailureDecision {
  const line = `attempt ${lease.attempt} on ${lease.clientId} (rank ${lease.rank}) never reached it${error ? ` (${error})` : ''}; placing it again, not counted`;
  const data = { attempt: lease.attempt, client_id: lease.clientId, outcome: 'undelivered' };
  const errorLog = task.error_log;
  if (Number(task.world_size) > 1) {
    return {
      kind: 'replace_rank',
      errorLog,
      event: { kind: 'rank_retry', message: line, data: { ...data, rank: lease.rank } },
    };
  }
  return { kind: 'retry', uncount: true, errorLog, event: { kind: 'retry', message: line, data } };
}

/**
 * The ranks of a multi-rank task that need a new client: those whose newest assignment was lost
 * or failed. A rank handed over by a sampled round (newest `cancelled`), completed, or still
 * held is not among them. Used when a paused task resumes: the ranks it lost meanwhile.
 */
export function ranksToReplace(
  assignments: readonly { rank: number | string; attempt: number | string; status: string }[],
): number[] {
  const newest = new Map<number, { attempt: number; status: string }>();
  for (const a of assignments) {
    const rank = Number(a.rank);
    const attempt = Number(a.attempt);
    if ((newest.get(rank)?.attempt ?? 0) < attempt) newest.set(rank, { attempt, status: a.status });
  }
  return [...newest.entries()]
    .filter(([, a]) => a.status === 'lost' || a.status === 'failed')
    .map(([rank]) => rank)
    .sort((x, y) => x - y);
}

/** The `result` of a completed task: the reported result with its metrics. */
export function resultOf(info: EndInfo): string {
  return JSON.stringify({ metrics: info.metrics ?? null, ...((info.result as object | null) ?? {}) });
}

/** What happens to a task after one of its leases ended without completing. */
export type FailureDecision = {
  /** The task's error log with this attempt's line added (as it was, when the attempt is not counted). */
  errorLog: string | null;
  event: Omit<NewTaskEvent, 'task_id' | 'at'>;
} & (
  | { kind: 'replace_rank' }
  /** `uncount`: the claim's attempt is given back (the task never reached its client). */
  | { kind: 'retry'; uncount?: true }
  | { kind: 'fail'; status: 'failed' | 'error' }
);

/**
 * Retry, re-place the rank, or fail: pure. A single-rank task goes back to the queue while
 * it has attempts left (`attempts` counts the task's claims). A multi-rank task's attempts
 * count per rank (the lease's attempt), so one flaky machine does not use up the task: the
 * rank alone is re-placed: at once while the task runs, when it resumes while it is paused
 * (`ranksToReplace`). Attempts of a rank that a sampled round handed to another client are not
 * counted (`handedOver`).
 */
export function decideAfterFailure(
  lease: Pick<Lease, 'attempt' | 'clientId' | 'rank'>,
  outcome: Exclude<Outcome, 'completed'>,
  error: string | null,
  task: TaskFate,
  /** Times this rank changed client because its task samples clients per round (not failures). */
  handedOver = 0,
): FailureDecision {
  const worldSize = Number(task.world_size);
  if (outcome === 'undelivered') return placeAgain(lease, task, error);
  const why =
    outcome === 'lost' ? (error ?? 'client lost') : `${outcome}${error ? `: ${error.slice(-2000)}` : ''}`;
  const line = `attempt ${lease.attempt} on ${lease.clientId} (rank ${lease.rank}): ${why}`;
  const errorLog = task.error_log ? `${task.error_log}\n${line}` : line;
  const maxAttempts = Number(task.max_attempts);
  const used = worldSize > 1 ? lease.attempt - handedOver : Number(task.attempts);
  const retry = used < maxAttempts;
  const data = { attempt: lease.attempt, client_id: lease.clientId, outcome };
  if (retry && worldSize > 1) {
    return {
      kind: 'replace_rank',
      errorLog,
      event: {
        kind: 'rank_retry',
        message: `${line}; re-placing rank ${lease.rank}${task.status === 'paused' ? ' when the task resumes' : ''} (${used}/${maxAttempts} attempts used)`,
        data: { ...data, rank: lease.rank },
      },
    };
  }
  if (retry) {
    return {
      kind: 'retry',
      errorLog,
      event: { kind: 'retry', message: `${line}; retrying (${used}/${maxAttempts} attempts used)`, data },
    };
  }
  const status = outcome === 'error' ? 'error' : 'failed';
  return {
    kind: 'fail',
    status,
    errorLog: `${errorLog}\ngave up after ${used} of ${maxAttempts} attempts`,
    event: { kind: status, message: line, data },
  };
}
