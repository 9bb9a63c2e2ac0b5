import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  now,
  quantile,
  sleep,
  type ChildMessage,
  type ChildRequest,
  type CpuUse,
  type CreateMode,
  type CreateReport,
  type SqlStats,
  type VerifyResult,
} from './common.js';
import { IpcChild } from './ipc-child.js';
import { cpuDelta, cpuOf, pidsNamed, selfCpu } from './procs.js';
import { SimWorkers } from './sim-workers.js';

export interface FarmOptions {
  db: 'sqlite' | 'mysql';
  mysqlUrl: string;
  n: number;
  workers: number;
  /** MAX_TASKS_PER_CLIENT. */
  slots: number;
  mode: CreateMode;
  /** service: create() calls in flight; batch and http: requests in flight. */
  concurrency: number;
  /** batch: tasks per `POST /api/tasks/batch` (at most 1,000). */
  chunk: number;
  timeoutMs: number;
  /** service only: create at this steady rate (tasks/s) to see latency without a backlog. */
  rate?: number | undefined;
  /** Write a CPU profile of the server over the measured window to this file. */
  profileFile?: string | undefined;
  /** Count SQL statements (slows the server a little; for profiling runs). */
  countSql?: boolean | undefined;
}

export interface FarmResult {
  system: 'sqlite' | 'mysql';
  mode: CreateMode;
  n: number;
  workers: number;
  slots: number;
  concurrency: number;
  chunk: number;
  /** Steady creation rate of a paced run (tasks/s); undefined when all were created at once. */
  rate?: number | undefined;
  ok: boolean;
  problems: string[];
  seconds: number;
  tasksPerSec: number;
  /** Rate of the create phase alone (creates run while dispatch is going on). */
  createsPerSec: number;
  /** Completions per second after the last create returned (dispatch alone), if enough were left (0.5 s at least). */
  drainTasksPerSec: number | null;
  latencyMs: { p50: number; p99: number; max: number };
  duplicateTaskMessages: number;
  workerErrors: string[];
  verify: VerifyResult | null;
  cpu: { server: CpuUse | null; driver: CpuUse | null; database: CpuUse | null };
  sql?: SqlStats | undefined;
  profile?: string | undefined;
}

/** The server child (bench/farm-server.ts), with request/response over its IPC channel. */
class Child extends IpcChild<ChildRequest, Extract<ChildMessage, { type: 'ready' }>> {
  constructor(proc: ChildProcess) {
    super(proc, { requestTimeoutMs: 120_000, stopTimeoutMs: 30_000 });
  }
}

const SERVER_SCRIPT = fileURLToPath(new URL('./farm-server.ts', import.meta.url));

/**
 * Creates tasks over HTTP from this (the driver) process, `concurrency` requests in flight:
 * `http` one task per `POST /api/tasks`, `batch` `chunk` tasks per `POST /api/tasks/batch`
 * (as BullMQ's `addBulk` sends its chunks to Redis). Every id is stamped with the time its
 * request was sent.
 */
async function createOverHttp(
  httpUrl: string,
  token: string,
  mode: 'http' | 'batch',
  n: number,
  concurrency: number,
  chunk: number,
): Promise<{ stamps: [number, number][]; first: number; done: number }> {
  const stamps: [number, number][] = [];
  const task = { type: 'noop', requirements: {}, config: {} };
  const per = mode === 'batch' ? chunk : 1;
  const url = `${httpUrl}/api/tasks${mode === 'batch' ? '/batch' : ''}`;
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const size = Math.min(per, n - next);
      next += size;
      const body = JSON.stringify(
        mode === 'batch' ? { tasks: Array.from({ length: size }, () => task) } : task,
      );
      const t = now();
      const res = await fetch(url, { method: 'POST', headers, body });
      const json = (await res.json()) as { id?: unknown; ids?: unknown };
      const ids = mode === 'batch' ? json.ids : [json.id];
      if (
        res.status !== 201 ||
        !Array.isArray(ids) ||
        ids.length !== size ||
        !ids.every((id) => typeof id === 'number')
      ) {
        throw new Error(`POST ${url} answered ${res.status}: ${JSON.stringify(json).slice(0, 200)}`);
      }
      for (const id of ids as number[]) stamps.push([id, t]);
    }
  };
  const first = now();
  const lanes = Math.min(concurrency, Math.ceil(n / per));
  await Promise.all(Array.from({ length: lanes }, lane));
  return { stamps, first, done: now() };
}

/** One AI Farm run: a fresh server and database, the workers, N tasks, the checks. */
export async function runFarm(o: FarmOptions): Promise<FarmResult> {
  const proc = fork(SERVER_SCRIPT, [], {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      BENCH_DB: o.db,
      BENCH_MYSQL_URL: o.mysqlUrl,
      BENCH_SLOTS: String(o.slots),
      BENCH_MAX_CLIENTS: String(Math.max(100, o.workers * 2)),
      BENCH_COUNT_SQL: o.countSql ? '1' : '0',
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const child = new Child(proc);
  let workers: SimWorkers | null = null;
  try {
    const ready = await child.ready;
    workers = await SimWorkers.start(ready.wsUrl, ready.workerToken, o.workers);
    // Let the registrations' writes and the unschedulable review settle.
    await sleep(500);
    const dbPids = o.db === 'mysql' ? pidsNamed(['mariadbd', 'mysqld']) : [];
    const dbBefore = cpuOf(dbPids);
    const driverBefore = selfCpu();
    await child.request({ cmd: 'cpu-mark' });
    if (o.countSql) await child.request({ cmd: 'sql-reset' });
    if (o.profileFile) await child.request({ cmd: 'profile-start' });

    let stamps: [number, number][];
    let first: number;
    let createsDone: number;
    if (o.mode === 'http' || o.mode === 'batch') {
      const h = await createOverHttp(ready.httpUrl, ready.adminToken, o.mode, o.n, o.concurrency, o.chunk);
      ({ stamps, first } = h);
      createsDone = h.done;
    } else {
      const created = child.request<{ firstCreateAt: number; createsDoneAt: number }>(
        { cmd: 'create', n: o.n, concurrency: o.concurrency, rate: o.rate },
        o.timeoutMs,
      );
      ({ firstCreateAt: first, createsDoneAt: createsDone } = await created);
      stamps = [];
    }
    const finished = await workers.waitForAcks(o.n, o.timeoutMs);
    const end = finished ? workers.lastAckAt : now();
    const report = await child.request<CreateReport>({ cmd: 'collect' });
    const cpu = {
      server: report.cpu,
      driver: cpuDelta(selfCpu(), driverBefore),
      database: cpuDelta(cpuOf(dbPids), dbBefore),
    };
    const profile = o.profileFile
      ? await child.request<string>({ cmd: 'profile-stop', file: o.profileFile })
      : undefined;
    const sql = o.countSql ? await child.request<SqlStats>({ cmd: 'sql-stats' }) : undefined;
    if (o.mode === 'service') stamps = report.stamps;

    const problems: string[] = [];
    if (!finished)
      problems.push(`only ${workers.acks} of ${o.n} results acknowledged within ${o.timeoutMs} ms`);
    const verify = await child.request<VerifyResult>({ cmd: 'verify' });
    if ((verify.byStatus.completed ?? 0) !== o.n)
      problems.push(`tasks by status ${JSON.stringify(verify.byStatus)}, expected ${o.n} completed`);
    if (verify.tasksNotExactlyOne !== 0)
      problems.push(`${verify.tasksNotExactlyOne} tasks without exactly one assignment row`);
    if (verify.assignmentRows !== o.n)
      problems.push(`${verify.assignmentRows} assignment rows, expected ${o.n}`);
    if (verify.minAttempt !== 1 || verify.maxAttempt !== 1)
      problems.push(`attempts range ${verify.minAttempt}..${verify.maxAttempt}, expected 1..1`);
    if (workers.duplicateTaskMessages > 0)
      problems.push(`${workers.duplicateTaskMessages} task messages for tasks already received`);
    if (workers.errorTotal > 0) problems.push(`${workers.errorTotal} error messages to workers`);

    const latencies: number[] = [];
    for (const [id, t] of stamps) {
      const got = workers.received.get(id);
      if (got !== undefined) latencies.push(got - t);
    }
    if (latencies.length !== o.n) problems.push(`latency known for ${latencies.length} of ${o.n} tasks`);
    latencies.sort((a, b) => a - b);
    const seconds = (end - first) / 1000;
    const afterCreates = workers.ackTimes.filter((t) => t > createsDone).length;
    const drainTasksPerSec =
      afterCreates >= Math.min(1000, o.n / 10) && end - createsDone >= 500
        ? afterCreates / ((end - createsDone) / 1000)
        : null;
    return {
      system: o.db,
      mode: o.mode,
      n: o.n,
      workers: o.workers,
      slots: o.slots,
      concurrency: o.concurrency,
      chunk: o.chunk,
      rate: o.rate,
      ok: problems.length === 0,
      problems,
      seconds,
      tasksPerSec: o.n / seconds,
      createsPerSec: o.n / ((createsDone - first) / 1000),
      drainTasksPerSec,
      latencyMs: {
        p50: quantile(latencies, 0.5),
        p99: quantile(latencies, 0.99),
        max: quantile(latencies, 1),
      },
      duplicateTaskMessages: workers.duplicateTaskMessages,
      workerErrors: workers.errors,
      verify,
      cpu,
      sql,
      profile,
    };
  } finally {
    if (workers) await workers.close();
    await child.stop();
  }
}
