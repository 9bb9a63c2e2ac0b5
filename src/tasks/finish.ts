import { sql, type Transaction } from 'kysely';
import type { Lease } from '../clients/registry.js';
import * as assignments from '../storage/assignment-repo.js';
import { perRow } from '../storage/bulk.js';
import type { Database } from '../storage/schema.js';
import { toDbTime } from '../storage/values.js';
import { BatchConflict, type BatchWrite, type GroupCommit } from '../storage/write-queue.js';
import { settleTask, type EndInfo, type Outcome, type Settlement } from './settle.js';

/** One lease ending. */
export interface FinishItem {
  lease: Lease;
  outcome: Outcome;
  info: EndInfo;
  now: Date;
}

export interface Finished {
  settlement: Settlement;
  /** The task's status and progress after the commit when known without reading it again. */
  after: { status: string; progress: number } | null;
}

const NONE: Finished = { settlement: { kind: 'none' }, after: null };

/**
 * Ends leases, every one of a group commit together. The common case, a single-rank task
 * completed, is set-based: one UPDATE of the assignments, one of their tasks and one
 * multi-row INSERT of the `completed` events, whatever the number of leases. Everything else (failures, lost clients,
 * ranks of multi-rank tasks) goes row by row through `settleTask`, as rare as it is
 * careful. Each lease ends at most once: only assignments still live are ended.
 */
export const finishLeases: BatchWrite<FinishItem, Finished> = {
  name: 'finish leases',
  async run(trx, items, commit) {
    const out = new Map<FinishItem, Finished>();
    const fast: FinishItem[] = [];
    const slow: FinishItem[] = [];
    const seen = new Set<number>();
    for (const i of items) {
      const simple = i.outcome === 'completed' && i.lease.worldSize === 1 && !seen.has(i.lease.taskId);
      seen.add(i.lease.taskId);
      (simple ? fast : slow).push(i);
    }
    if (fast.length > 0) await completeSingle(trx, fast, out, commit);
    for (const i of slow) out.set(i, await finishOne(trx, i));
    return items.map((i) => out.get(i) ?? NONE);
  },
};

/**
 * Completed leases of single-rank tasks: their assignments end, their tasks complete. The
 * assignments must all still be live (else the batch is retried lease by lease); a task
 * no longer running or paused (cancelled meanwhile) keeps its status.
 */
async function completeSingle(
  trx: Transaction<Database>,
  items: FinishItem[],
  out: Map<FinishItem, Finished>,
  commit: GroupCommit,
): Promise<void> {
  const nowDb = toDbTime((items[0] as FinishItem).now);
  const ended = await trx
    .updateTable('task_assignments')
    .set({
      status: 'completed',
      progress: 100,
      updated_at: nowDb,
      finished_at: nowDb,
      error: null,
      checkpoint_path: perRow(
        new Map(items.map((i) => [i.lease.assignmentId, i.info.checkpoint_path ?? null])),
      ),
    })
    .where(
      'id',
      'in',
      items.map((i) => i.lease.assignmentId),
    )
    .where('status', 'in', assignments.LIVE_ASSIGNMENT as never)
    .executeTakeFirst();
  if (Number(ended.numUpdatedRows) !== items.length) {
    if (items.length === 1) return; // the lease had ended already: nothing to settle
    throw new BatchConflict(`ended ${ended.numUpdatedRows} of ${items.length} leases`);
  }
  const results = new Map<number, string>();
  const metrics = new Map<number, string>();
  const checkpoints = new Map<number, string>();
  for (const i of items) {
    const { info } = i;
    const id = i.lease.taskId;
    results.set(
      id,
      JSON.stringify({ metrics: info.metrics ?? null, ...((info.result as object | null) ?? {}) }),
    );
    if (info.metrics !== undefined && info.metrics !== null) metrics.set(id, JSON.stringify(info.metrics));
    if (info.checkpoint_path) checkpoints.set(id, info.checkpoint_path);
  }
  const taskIds = items.map((i) => i.lease.taskId);
  const res = await trx
    .updateTable('tasks')
    .set({
      status: 'completed',
      progress: 100,
      result: perRow(results),
      ...(metrics.size > 0 ? { metrics: perRow(metrics, sql`metrics`) } : {}),
      ...(checkpoints.size > 0 ? { checkpoint_path: perRow(checkpoints, sql`checkpoint_path`) } : {}),
      finished_at: nowDb,
      updated_at: nowDb,
    })
    .where('id', 'in', taskIds)
    .where('status', 'in', ['running', 'paused'])
    .executeTakeFirst();
  let completed = items;
  if (Number(res.numUpdatedRows) !== items.length) {
    // Some tasks were no longer live (cancelled while their result was on its way).
    const rows = await trx.selectFrom('tasks').select(['id', 'status']).where('id', 'in', taskIds).execute();
    const done = new Set(rows.filter((r) => r.status === 'completed').map((r) => Number(r.id)));
    completed = items.filter((i) => done.has(i.lease.taskId));
  }
  if (completed.length === 0) return;
  commit.events.push(
    ...completed.map((i) => ({
      task_id: i.lease.taskId,
      at: toDbTime(i.now, true),
      kind: 'completed',
      message: `completed by ${i.lease.clientId} (attempt ${i.lease.attempt})`,
    })),
  );
  for (const i of completed)
    out.set(i, { settlement: { kind: 'none' }, after: { status: 'completed', progress: 100 } });
}

/** One lease, row by row: the assignment ends (if still live), then the task's fate is settled. */
async function finishOne(trx: Transaction<Database>, item: FinishItem): Promise<Finished> {
  const { lease, outcome, info, now } = item;
  const nowDb = toDbTime(now);
  const ended = await assignments.updateAssignmentIf(trx, lease.assignmentId, assignments.LIVE_ASSIGNMENT, {
    status: outcome === 'completed' ? 'completed' : outcome === 'lost' ? 'lost' : 'failed',
    progress: outcome === 'completed' ? 100 : lease.progress,
    updated_at: nowDb,
    finished_at: nowDb,
    error: outcome === 'completed' ? null : info.error_log,
    checkpoint_path: info.checkpoint_path ?? null,
  });
  if (!ended) return NONE;
  const task = await trx
    .selectFrom('tasks')
    .select(['status', 'attempts', 'max_attempts', 'error_log', 'world_size'])
    .where('id', '=', lease.taskId)
    .executeTakeFirst();
  if (!task || (task.status !== 'running' && task.status !== 'paused')) return NONE;
  return { settlement: await settleTask(trx, lease, outcome, info, task, now), after: null };
}
