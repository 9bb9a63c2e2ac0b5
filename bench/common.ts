/**
 * Shared by the dispatch benchmark's processes: the clock, statistics, and the messages
 * the driver (bench/dispatch.ts) and the server child (bench/farm-server.ts) exchange.
 */

/**
 * Wall-clock milliseconds with sub-millisecond resolution. Both processes of a run use it,
 * so a time taken in the server child can be subtracted from one taken in the driver.
 */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The q-quantile (0..1) of `sorted` (ascending), nearest rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = Math.floor(finite.length / 2);
  return finite.length % 2
    ? (finite[mid] as number)
    : ((finite[mid - 1] as number) + (finite[mid] as number)) / 2;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * How the N tasks are created: `batch` = `POST /api/tasks/batch` from the driver, chunks of
 * tasks; `service` = `TaskService.create` one task at a time in the server child (no HTTP);
 * `http` = `POST /api/tasks` from the driver, one task per request.
 */
export type CreateMode = 'batch' | 'service' | 'http';

/** CPU seconds (user + system) a process spent over a window. */
export interface CpuUse {
  user: number;
  system: number;
}

export interface VerifyResult {
  byStatus: Record<string, number>;
  assignmentRows: number;
  tasksWithAssignments: number;
  /** Tasks with other than exactly one assignment row. */
  tasksNotExactlyOne: number;
  minAttempt: number | null;
  maxAttempt: number | null;
}

export interface SqlStats {
  /** Statements by normalised text (BEGIN and COMMIT included), most frequent first. */
  statements: { sql: string; count: number; /** SQLite: time executing them, ms. */ ms: number }[];
  total: number;
  transactions: number;
}

/** Driver -> server child. */
export type ChildRequest =
  | {
      id: number;
      /** TaskService.create, one task per call (the `service` create mode). */
      cmd: 'create';
      n: number;
      concurrency: number;
      /** service only: start creates at this steady rate (tasks/s) instead of all at once. */
      rate?: number | undefined;
    }
  | { id: number; cmd: 'collect' }
  | { id: number; cmd: 'verify' }
  | { id: number; cmd: 'cpu-mark' }
  | { id: number; cmd: 'profile-start' }
  | { id: number; cmd: 'profile-stop'; file: string }
  | { id: number; cmd: 'sql-reset' }
  | { id: number; cmd: 'sql-stats' }
  | { id: number; cmd: 'stop' };

/** Server child -> driver: once when listening, then one reply per request. */
export type ChildMessage =
  | { type: 'ready'; wsUrl: string; httpUrl: string; adminToken: string; workerToken: string }
  | { type: 'reply'; id: number; ok: true; value: unknown }
  | { type: 'reply'; id: number; ok: false; error: string };

/** What `collect` returns: when each task's creation began, and the create phase. */
export interface CreateReport {
  /** [task id, ms] pairs: the time create() was called for it. */
  stamps: [number, number][];
  firstCreateAt: number;
  createsDoneAt: number;
  /** CPU the server process used since the last `cpu-mark`. */
  cpu: CpuUse;
}
