/**
 * Which round an update may go into. Sync: only the open round it names. Async: the open
 * round folds an update that started in any round at most `max_staleness` rounds before it; a staler one is refused (409 stale_update) and counted as an `update_stale` event.
 */
import { conflict } from '../../errors.js';
import { insertTaskEvent } from '../../storage/task-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import type { TrainingConfig } from '../training-config.js';

/** The event kind of a refused stale update (counted as `refused_stale` in the training state). */
export const STALE_EVENT = 'update_stale';

/**
 * Throws the 409 refusing an update that started from `from` when round `open` is open, after
 * recording an update refused as too stale and calling `onStale` (its rank is told the newest
 * open round, so that it does not wait for one). `rank` names it in the event.
 */
export async function checkVersion(
  d: { writes: WriteQueue; clock: Clock },
  r: { taskId: number; number: number; config: TrainingConfig },
  from: number,
  rank: number,
  onStale: () => Promise<void>,
): Promise<void> {
  const open = r.number;
  if (!r.config.async) {
    if (from !== open)
      throw conflict('round_closed', `round ${from} is not open (the open round is ${open})`);
    return;
  }
  if (from > open || from < 1)
    throw conflict('round_closed', `round ${from} has not opened (the open round is ${open})`);
  const staleness = open - from;
  const max = r.config.async.max_staleness;
  if (staleness <= max) return;
  const message = `rank ${rank}'s update started in round ${from} refused: staleness ${staleness} > max_staleness ${max} (the open round is ${open})`;
  await d.writes.run((trx) =>
    insertTaskEvent(trx, {
      task_id: r.taskId,
      at: toDbTime(d.clock.now(), true),
      kind: STALE_EVENT,
      message,
      data: { rank, from, round: open, staleness, max_staleness: max },
    }),
  );
  await onStale();
  throw conflict('stale_update', message, { staleness, max_staleness: max, round: open });
}
