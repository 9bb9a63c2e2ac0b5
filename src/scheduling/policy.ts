/**
 * The matching policy: which client runs which task. Pure code, no I/O: the dispatcher
 * feeds it a snapshot and carries out what it returns.
 */

/** What a client offers, from its registration. */
export interface ClientCapacity {
  id: string;
  cpuCores: number;
  ramGb: number;
  /** Memory of each GPU in GiB. */
  gpuMemoryGb: number[];
  /** Task types it declared it can run; undefined means any. */
  taskTypes?: readonly string[] | undefined;
  /** Free task slots right now (MAX_TASKS_PER_CLIENT or its own max_tasks, minus running). */
  freeSlots: number;
  cordoned: boolean;
}

export interface TaskRequirements {
  min_cpu_cores?: number | undefined;
  min_ram_gb?: number | undefined;
  gpu_count?: number | undefined;
  min_gpu_memory_gb?: number | undefined;
}

/** A pending task as the scheduler sees it. */
export interface PendingTask {
  id: number;
  type: string;
  priority: number;
  requirements: TaskRequirements;
  /** Ranks to place at once (gang scheduling); 1 for a single-client task. */
  worldSize: number;
  /** Ranks still to place; defaults to every rank. A retried rank of a running task lists just itself. */
  ranks?: readonly number[] | undefined;
  /** Clients that must not get this task again (e.g. already hold another rank). */
  excludeClients?: ReadonlySet<string> | undefined;
  /**
   * Tasks with one key share type, requirements and rank count (and exclude no client): once
   * one of them finds no place in a call, the rest are skipped without looking at clients.
   */
  classKey?: string | undefined;
  /**
   * A sampled training task (docs/training.md, "Clients sampled per round"): `choose` picks its
   * clients among every eligible one (ranks 0, 1, ... in its order), or answers null when too
   * few are eligible (fewer than min_available).
   */
  sample?:
    | { minAvailable: number; choose(eligible: readonly ClientCapacity[]): SampledPlacement[] | null }
    | undefined;
}

/** A client a sampled task's round chose, and why (recorded in the round_sampled event). */
export interface SampledPlacement {
  clientId: string;
  reason: string;
  method: string;
  eligible: number;
}

/** The classKey of a task that excludes no client. */
export function requirementClass(
  task: Pick<PendingTask, 'type' | 'requirements' | 'worldSize' | 'ranks'>,
): string {
  const r = task.requirements;
  const ranks = task.ranks?.length ?? task.worldSize;
  return `${ranks}|${r.min_cpu_cores ?? ''}|${r.min_ram_gb ?? ''}|${r.gpu_count ?? ''}|${r.min_gpu_memory_gb ?? ''}|${task.type}`;
}

export interface Placement {
  taskId: number;
  rank: number;
  clientId: string;
  /** Set for a sampled task's round: why this client. */
  sampled?: SampledPlacement | undefined;
}

/** Whether a client's hardware meets a task's requirements (ignoring load and cordon). */
export function fits(
  req: TaskRequirements,
  c: Omit<ClientCapacity, 'freeSlots' | 'cordoned'>,
  type?: string,
): boolean {
  if (type !== undefined && c.taskTypes && !c.taskTypes.includes(type)) return false;
  if (req.min_cpu_cores !== undefined && c.cpuCores < req.min_cpu_cores) return false;
  if (req.min_ram_gb !== undefined && c.ramGb + 1e-9 < req.min_ram_gb) return false;
  const gpus = req.gpu_count ?? (req.min_gpu_memory_gb ? 1 : 0);
  if (gpus > 0) {
    const good = c.gpuMemoryGb.filter((m) => m + 1e-9 >= (req.min_gpu_memory_gb ?? 0)).length;
    if (good < gpus) return false;
  }
  return true;
}

/** Highest priority first, then oldest (lowest id). */
export function byPriorityThenAge(a: PendingTask, b: PendingTask): number {
  return b.priority - a.priority || a.id - b.id;
}

/**
 * Places as many pending tasks as the clients' free slots allow. Tasks go in priority
 * then age order; a task whose ranks cannot all be placed at once is skipped (it never
 * holds slots half-placed) so smaller tasks behind it still run. Among eligible clients
 * the least loaded wins, which spreads work across the farm.
 *
 * `tasks` must come in byPriorityThenAge order; iteration stops once every slot is taken.
 */
export function placeTasks(tasks: Iterable<PendingTask>, clients: readonly ClientCapacity[]): Placement[] {
  const free = new Map<string, number>();
  // Clients in id order once per call; a stable sort by free slots keeps it for ties.
  const open = clients.filter((c) => !c.cordoned && c.freeSlots > 0).sort((a, b) => a.id.localeCompare(b.id));
  for (const c of open) free.set(c.id, c.freeSlots);
  const placements: Placement[] = [];
  const take = (taskId: number, rank: number, c: Pick<ClientCapacity, 'id'>, sampled?: SampledPlacement) => {
    placements.push({ taskId, rank, clientId: c.id, ...(sampled ? { sampled } : {}) });
    const left = (free.get(c.id) ?? 0) - 1;
    if (left > 0) free.set(c.id, left);
    else free.delete(c.id);
  };
  const eligible = (task: PendingTask, c: ClientCapacity) =>
    (free.get(c.id) ?? 0) > 0 && !task.excludeClients?.has(c.id) && fits(task.requirements, c, task.type);
  // Classes with no place left in this call: free slots only shrink while it runs.
  const full = new Set<string>();
  for (const task of tasks) {
    if (free.size === 0) break;
    const key = task.excludeClients?.size || task.sample ? undefined : task.classKey;
    if (key !== undefined && full.has(key)) continue;
    const ranks = task.ranks ?? Array.from({ length: task.worldSize }, (_, i) => i);
    if (ranks.length === 0) continue;
    const before = placements.length;
    placeOne(task, ranks);
    if (key !== undefined && placements.length === before) full.add(key);
  }
  return placements;

  function placeOne(task: PendingTask, ranks: readonly number[]): void {
    if (task.sample) {
      const picks = task.sample.choose(open.filter((c) => eligible(task, c)))?.slice(0, ranks.length);
      picks?.forEach((p, i) => take(task.id, ranks[i] as number, { id: p.clientId }, p));
      return;
    }
    if (ranks.length === 1) {
      // One rank: the least loaded eligible client, found in one scan (no sort per task).
      let best: ClientCapacity | undefined;
      let bestFree = 0;
      for (const c of open) {
        const f = free.get(c.id) ?? 0;
        if (f > bestFree && eligible(task, c)) {
          best = c;
          bestFree = f;
        }
      }
      if (best) take(task.id, ranks[0] as number, best);
      return;
    }
    const candidates = open
      .filter((c) => eligible(task, c))
      .sort((a, b) => (free.get(b.id) ?? 0) - (free.get(a.id) ?? 0));
    // Each rank of one task goes to a different client: ranks are meant to run in parallel.
    if (candidates.length < ranks.length) return;
    ranks.forEach((rank, i) => take(task.id, rank, candidates[i] as ClientCapacity));
  }
}

/**
 * Why no known client could ever run a task, or null when one could. Used to tell users
 * instead of leaving the task silently pending.
 */
export function unschedulableReason(
  task: Pick<PendingTask, 'requirements' | 'worldSize' | 'type' | 'sample'>,
  known: readonly Omit<ClientCapacity, 'freeSlots' | 'cordoned'>[],
): string | null {
  // A sampled task waits for min_available clients, not just for its ranks.
  const needed = task.sample?.minAvailable ?? task.worldSize;
  // Most tasks fit: stop counting once enough clients qualify (this runs for every queued task).
  let able = 0;
  for (const c of known) {
    if (fits(task.requirements, c, task.type) && ++able >= needed) return null;
  }
  const r = task.requirements;
  const needs: string[] = [];
  if (r.min_cpu_cores !== undefined) needs.push(`${r.min_cpu_cores} CPU cores`);
  if (r.min_ram_gb !== undefined) needs.push(`${r.min_ram_gb} GiB RAM`);
  if (r.gpu_count || r.min_gpu_memory_gb) {
    needs.push(
      `${r.gpu_count ?? 1} GPU(s)${r.min_gpu_memory_gb ? ` with ${r.min_gpu_memory_gb} GiB each` : ''}`,
    );
  }
  const wants = needed > 1 ? `${needed} clients with ` : 'a client with ';
  const best = known.length
    ? `; known clients have at most ${Math.max(...known.map((c) => c.cpuCores))} cores, ` +
      `${Math.max(...known.map((c) => c.ramGb)).toFixed(1)} GiB RAM, ` +
      `${Math.max(...known.map((c) => c.gpuMemoryGb.length))} GPU(s)`
    : '; no client has registered yet';
  return `needs ${wants}${needs.join(', ') || `task type ${task.type}`}; ${able} known client(s) qualify${best}`;
}
