import { claimTasks as claim, type Claim, type Claimed as ClaimedRanks } from '../tasks/lifecycle.js';
import { toDbTime } from '../storage/values.js';
import { BatchConflict, type BatchWrite } from '../storage/write-queue.js';
import { roundSampledEvent } from '../training/sampling-config.js';
import { assignedLease, type Lease } from '../clients/registry.js';
import type { Placement } from './policy.js';

/** One pending task placed on its clients (one placement per rank). */
export interface ClaimItem extends Claim {
  placements: Placement[];
}

/** The attempt and assignment id of each placement, or null when the task was no longer pending. */
export type Claimed = ClaimedRanks | null;

/**
 * Claims pending tasks, every claim of a group commit together (the lifecycle's `claimTasks`):
 * one `UPDATE tasks ... WHERE id IN (...) AND status = 'pending' AND attempts = <as read>`, one
 * multi-row INSERT of the assignments and one of the `assigned` events, whatever the number of
 * tasks.
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
    const claimed = await claim(trx, claims);
    if (!claimed) {
      if (claims.length === 1) return items.map(() => null);
      throw new BatchConflict(`claimed fewer than ${claims.length} tasks`);
    }
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
    for (const i of claims) {
      const first = i.placements[0]?.sampled;
      if (!first) continue;
      // A sampled task's first round: who it sampled, in the claim's commit (docs/training.md).
      const sampled = i.placements.map((p) => ({
        client_id: p.clientId,
        rank: p.rank,
        reason: p.sampled?.reason ?? '',
      }));
      commit.events.push(
        roundSampledEvent(i.taskId, toDbTime(i.now, true), 1, first.method, first.eligible, sampled),
      );
    }
    const out = new Map(claims.map((c, i) => [c, claimed[i] as ClaimedRanks]));
    return items.map((i) => out.get(i) ?? null);
  },
};

/** The lease a placement reserves on its client until its claim commits (attempt and assignment 0). */
export function provisionalLease(p: Placement): Lease {
  return assignedLease({ taskId: p.taskId, rank: p.rank, attempt: 0, assignmentId: 0, clientId: p.clientId });
}
