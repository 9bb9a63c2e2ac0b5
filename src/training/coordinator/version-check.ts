/**
 * Which round an update may go into. Sync: only the open round it names; with `over_select`
 * an update for a round already closed (on its first K updates) is late: refused (409
 * round_closed) and counted, as an `update_late` event and in the round's `refused_late`.
 * Async: the open round folds an update that started in any round at most `max_staleness`
 * rounds before it; a staler one is refused (409 stale_update) and counted as an `update_stale` event.
 * An async update that arrives while its round closes (or fills up on another instance) is not
 * refused: it goes into the next round.
 */
import { conflict } from '../../errors.js';
import { insertTaskEvent } from '../../storage/task-repo.js';
import { countLateUpdate } from '../../storage/training-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import type { TrainingConfig } from '../training-config.js';

/** The event kind of a refused stale update (counted as `refused_stale` in the training state). */
export const STALE_EVENT = 'update_stale';

/** The event kind of a refused late update (sync with over_select; counted in `refused_late`). */
export const LATE_EVENT = 'update_late';

/** An update knocking: the round it started in, its rank and client. */
export interface Knock {
  from: number;
  rank: number;
  clientId: string;
  /** The journal said the open round closed (the round's phase may say so too). */
  closed: boolean;
}

type Deps = { writes: WriteQueue; clock: Clock };

/**
 * Throws the 409 refusing an update that started from `u.from` when round `open` is open (and
 * `u.closed` when it no longer takes updates), after recording a late update (sync with
 * over_select) or an update refused as too stale and calling `onStale` (its rank is told the
 * newest open round, so that it does not wait for one).
 */
export async function checkVersion(
  d: Deps,
  r: {
    taskId: number;
    number: number;
    fill: number;
    config: TrainingConfig;
    accepting: boolean;
    phase: { kind: string };
  },
  knock: Knock,
  onStale: () => Promise<void>,
): Promise<void> {
  // A closing round takes no more updates, but those for it are late, not refused for nothing.
  const u = { ...knock, closed: knock.closed || r.phase.kind === 'closing' };
  if (!r.accepting && !u.closed) throw conflict('round_closed', `round ${r.number} is not open`);
  const { from, rank } = u;
  const open = r.number;
  if (!r.config.async) {
    if (from === open && !u.closed) return;
    if (from > open) throw conflict('round_closed', `round ${from} is not open (the open round is ${open})`);
    if (r.config.over_select !== undefined) await countLate(d, r.taskId, r.fill, u);
    throw conflict(
      'round_closed',
      from === open
        ? `round ${from} closed during the upload`
        : `round ${from} is closed (the open round is ${open})`,
    );
  }
  // Async: a closing round's update goes into the next one (Round.accept); its staleness is
  // checked again there.
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

/** Records a late update: a task event and one more `refused_late` in its round's row. */
async function countLate(d: Deps, taskId: number, fill: number, u: Knock): Promise<void> {
  await d.writes.run(async (trx) => {
    await insertTaskEvent(trx, {
      task_id: taskId,
      at: toDbTime(d.clock.now(), true),
      kind: LATE_EVENT,
      message: `rank ${u.rank}'s update for round ${u.from} refused: the round closed on its first ${fill} update(s)`,
      data: { round: u.from, rank: u.rank, client_id: u.clientId },
    });
    await countLateUpdate(trx, taskId, u.from);
  });
}
