/** Who trained in each round of a training task, for the views of its rounds. */
import type { RoundUpdateView } from '../api/tasks.js';
import type { Executor } from '../storage/executor.js';
import { listTaskUpdates, type UpdateRow } from '../storage/training-repo.js';
import { fromDbTime } from '../storage/values.js';

/** An accepted update as its round's views show it. */
export function presentUpdate(
  u: Pick<UpdateRow, 'rank' | 'client_id' | 'attempt' | 'accepted_at'>,
): RoundUpdateView {
  return {
    rank: Number(u.rank),
    client_id: u.client_id,
    attempt: Number(u.attempt),
    accepted_at: fromDbTime(u.accepted_at) as string,
  };
}

/**
 * The updates of a task, by the round whose aggregate they went into (sync: the round they
 * trained in; async: the version whose buffer took them), in acceptance order.
 */
export async function trainedByRound(db: Executor, taskId: number): Promise<Map<number, RoundUpdateView[]>> {
  const out = new Map<number, RoundUpdateView[]>();
  for (const u of await listTaskUpdates(db, taskId)) {
    const round = Number(u.buffer_round ?? u.round);
    const view = presentUpdate(u);
    const list = out.get(round);
    if (list) list.push(view);
    else out.set(round, [view]);
  }
  return out;
}
