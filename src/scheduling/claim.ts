import { sql, type Transaction } from 'kysely';
import { insertAssignment, insertAssignments, type NewAssignment } from '../storage/assignment-repo.js';
import type { Database } from '../storage/schema.js';
import { insertTaskEvent } from '../storage/task-repo.js';
import { perRow } from '../storage/bulk.js';
import { toDbTime } from '../storage/values.js';
import { BatchConflict, type BatchWrite } from '../storage/write-queue.js';
import type { Placement } from './policy.js';

/** One pending task placed on its clients (one placement per rank). */
export interface ClaimItem {
  taskId: number;
  placements: Placement[];
  /** The task's `attempts` when it was read; the claim makes it attempts + 1. */
  attempts: number;
  now: Date;
}

/** The attempt and assignment id of each placement, or null when the task was no longer pending. */
export type Claimed = { attempts: number[]; ids: number[] } | null;

/**
 * Claims pending tasks, every claim of a group commit together: one `UPDATE tasks ...
 * WHERE id IN (...) AND status = 'pending' AND attempts = <as read>`, one multi-row INSERT
 * of the assignments and one of the `assigned` events, whatever the number of tasks.
 *
 * The UPDATE is the claim: only a task still pending, with the attempts the dispatcher
 * read, changes, so two claimers (instances, passes) cannot both win. When it changes
 * every row, every claim won; when not (rare: a cancel or another instance got there
 * first), the batch is retried claim by claim, where a claim that changes no row lost.
 */
export const claimTasks: BatchWrite<ClaimItem, Claimed> = {
  name: 'claim tasks',
  async run(trx, items, commit) {
    // A task placed twice in one commit (two passes) is claimed once, by the first.
    const seen = new Set<number>();
    const claims = items.filter((i) => !seen.has(i.taskId) && seen.add(i.taskId));
    const at = toDbTime((claims[0] as ClaimItem).now);
    const res = await trx
      .updateTable('tasks')
      .set({
        status: 'running',
        client_id: perRow(new Map(claims.map((i) => [i.taskId, i.placements[0]?.clientId ?? null]))),
        attempts: sql<number>`attempts + 1`,
        started_at: at,
        updated_at: at,
        unschedulable_reason: null,
      })
      .where(
        'id',
        'in',
        claims.map((i) => i.taskId),
      )
      .where('status', '=', 'pending')
      .where('attempts', '=', perRow(new Map(claims.map((i) => [i.taskId, i.attempts]))))
      .executeTakeFirst();
    const changed = Number(res.numUpdatedRows);
    if (changed !== claims.length) {
      if (claims.length === 1) return items.map(() => null);
      throw new BatchConflict(`claimed ${changed} of ${claims.length} tasks`);
    }
    const rows: NewAssignment[] = [];
    for (const i of claims) {
      for (const p of i.placements) {
        rows.push({
          task_id: i.taskId,
          client_id: p.clientId,
          rank: p.rank,
          attempt: i.attempts + 1,
          at: toDbTime(i.now),
        });
      }
    }
    const ids = await insertAssignments(trx, rows);
    commit.events.push(
      ...claims.map((i) => {
        const attempt = i.attempts + 1;
        const ps = i.placements;
        return {
          task_id: i.taskId,
          at: toDbTime(i.now, true),
          kind: 'assigned',
          message: `attempt ${attempt} assigned to ${ps.map((p) => `${p.clientId} (rank ${p.rank})`).join(', ')}`,
          data: { attempt, clients: ps.map((p) => p.clientId) },
        };
      }),
    );
    const out = new Map<ClaimItem, Claimed>();
    let k = 0;
    for (const i of claims) {
      out.set(i, {
        attempts: i.placements.map(() => i.attempts + 1),
        ids: i.placements.map(() => ids[k++] as number),
      });
    }
    return items.map((i) => out.get(i) ?? null);
  },
};

/** Claims re-placed ranks of a running task: each rank's next attempt (null when it no longer runs). */
export async function claimRanks(
  trx: Transaction<Database>,
  taskId: number,
  ps: Placement[],
  now: Date,
): Promise<{ attempts: number[]; ids: number[] } | null> {
  const task = await trx.selectFrom('tasks').select(['status']).where('id', '=', taskId).executeTakeFirst();
  if (task?.status !== 'running') return null;
  const attempts: number[] = [];
  const ids: number[] = [];
  for (const p of ps) {
    const prev = await trx
      .selectFrom('task_assignments')
      .select((eb) => eb.fn.max('attempt').as('a'))
      .where('task_id', '=', taskId)
      .where('rank', '=', p.rank)
      .executeTakeFirst();
    const attempt = Number(prev?.a ?? 0) + 1;
    attempts.push(attempt);
    ids.push(
      await insertAssignment(trx, {
        task_id: taskId,
        client_id: p.clientId,
        rank: p.rank,
        attempt,
        at: toDbTime(now),
      }),
    );
  }
  await trx
    .updateTable('tasks')
    .set({ attempts: sql<number>`attempts + ${ps.length}`, updated_at: toDbTime(now) })
    .where('id', '=', taskId)
    .execute();
  await insertTaskEvent(trx, {
    task_id: taskId,
    at: toDbTime(now, true),
    kind: 'rank_assigned',
    message: ps.map((p, i) => `rank ${p.rank} attempt ${attempts[i]} assigned to ${p.clientId}`).join('; '),
  });
  return { attempts, ids };
}
