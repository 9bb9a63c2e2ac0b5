import type { Bus } from '../bus/bus.js';
import { LIVE_STATUSES } from '../tasks/task-state.js';
import type { Dispatcher } from './dispatcher.js';

/** What a dispatcher does with a task's announced status. */
export type StatusFollower = Pick<Dispatcher, 'refresh' | 'drop' | 'farmChanged'>;

/**
 * Keeps a dispatcher's queue in step with the status of tasks, announced on `task.status` by
 * whichever instance changed it: a pending task is read again (and queued), any other leaves
 * the queue, and a task neither running nor paused (ended, or pending again) left its clients,
 * on whichever instance, with free slots. `task.changed` is the panel's news and decides
 * nothing here. Returns the function that unsubscribes.
 */
export function followTaskStatus(
  bus: Bus,
  dispatcher: StatusFollower,
  onError: (err: unknown) => void,
): () => void {
  return bus.subscribe('task.status', (m) => {
    if (m.status === 'pending') void dispatcher.refresh(m.task_id).catch(onError);
    else dispatcher.drop(m.task_id);
    if (m.status === 'deleted' || !LIVE_STATUSES.has(m.status)) dispatcher.farmChanged();
  });
}
