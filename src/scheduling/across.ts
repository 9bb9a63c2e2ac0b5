/**
 * Placing multi-rank tasks on the whole farm (issue 14, point 4). Every instance queues every
 * pending task and first places on its own clients alone (the policy, in memory). A task with
 * several ranks that does not fit there is placed again on its clients together with the
 * clients connected through the other live instances, read from the database with their free
 * slots. The claim takes a slot of each remote client conditionally (lifecycle's
 * takeRemoteSlot), and the `task` frame of a remote rank travels on the bus (`cluster.push`)
 * to the instance holding its socket, which sends it.
 */
import type { ClientCapacity, PendingTask, Placement } from './policy.js';
import { placeTasks } from './policy.js';

/** A client whose socket another instance holds, as the database shows it. */
export interface RemoteClient extends ClientCapacity {
  /** The instance holding its socket. */
  instanceId: string;
  /** Its max_tasks (bounded by MAX_TASKS_PER_CLIENT): the claim's condition. */
  maxTasks: number;
}

/** The rest of the farm, as one instance sees it (src/cluster implements it). */
export interface FarmView {
  /** Clients connected through the other live instances, with their free slots. */
  remoteClients(): Promise<RemoteClient[]>;
  /** Clients holding a live rank of a task, whichever instance holds them. */
  clientsOf(taskId: number): Promise<string[]>;
}

/** A queued task as this step sees it. */
export interface SpanningTask extends PendingTask {
  /** A lost rank of a running task (queued only by the instance that lost it). */
  partial: boolean;
}

/**
 * Places multi-rank tasks on local and remote clients together. A task placed wholly on remote
 * clients is left to the instances holding them (each queues it too, and places it with its own
 * clients first), unless it is a lost rank, which no other instance has queued.
 */
export async function placeAcross(
  tasks: readonly SpanningTask[],
  local: readonly ClientCapacity[],
  farm: FarmView,
): Promise<{ placements: Placement[]; remote: Map<string, RemoteClient> }> {
  const remote = new Map((await farm.remoteClients()).map((c) => [c.id, c]));
  if (remote.size === 0) return { placements: [], remote };
  for (const t of tasks) {
    // A lost rank must not land on a client holding another rank of its task, anywhere.
    if (t.partial) t.excludeClients = new Set([...(t.excludeClients ?? []), ...(await farm.clientsOf(t.id))]);
  }
  const all = placeTasks(tasks, [...local, ...remote.values()]);
  const partial = new Set(tasks.filter((t) => t.partial).map((t) => t.id));
  const hasLocal = new Set(all.filter((p) => !remote.has(p.clientId)).map((p) => p.taskId));
  const placements = all.filter((p) => partial.has(p.taskId) || hasLocal.has(p.taskId));
  return { placements, remote };
}
