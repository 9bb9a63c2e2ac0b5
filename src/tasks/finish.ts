import type { Lease } from '../clients/registry.js';
import type { TaskStatus } from '../storage/schema.js';
import { toDbTime } from '../storage/values.js';
import { BatchConflict, type BatchWrite } from '../storage/write-queue.js';
import type { EndInfo, Outcome, Settlement } from './lifecycle-decisions.js';
import { completeLeases, endLease } from './lifecycle.js';

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
  after: { status: TaskStatus; progress: number } | null;
}

const NONE: Finished = { settlement: { kind: 'none' }, after: null };

/**
 * Ends leases, every one of a group commit together. The common case, a single-rank task
 * completed, is set-based (`completeLeases`): one UPDATE of the assignments, one of their
 * tasks and one multi-row INSERT of the `completed` events, whatever the number of leases.
 * Everything else (failures, lost clients, ranks of multi-rank tasks) goes row by row through
 * `endLease`, as rare as it is careful. Each lease ends at most once: only assignments still
 * live are ended.
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
    if (fast.length > 0) {
      const completed = await completeLeases(trx, fast, (fast[0] as FinishItem).now);
      if (completed === null && fast.length > 1) {
        throw new BatchConflict(`not all of ${fast.length} leases were live`);
      }
      // A single lease that had ended already has nothing to settle.
      for (const i of (completed ?? []) as FinishItem[]) {
        commit.events.push({
          task_id: i.lease.taskId,
          at: toDbTime(i.now, true),
          kind: 'completed',
          message: `completed by ${i.lease.clientId} (attempt ${i.lease.attempt})`,
        });
        out.set(i, { settlement: { kind: 'none' }, after: { status: 'completed', progress: 100 } });
      }
    }
    for (const i of slow) {
      out.set(i, { settlement: await endLease(trx, i.lease, i.outcome, i.info, i.now), after: null });
    }
    return items.map((i) => out.get(i) ?? NONE);
  },
};
