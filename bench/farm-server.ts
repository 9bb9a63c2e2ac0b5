/**
 * The AI Farm server of one dispatch-benchmark run, as a child process of bench/dispatch.ts
 * (which keeps the simulated workers' CPU out of this process).
 *
 * It runs the real composition (src/main.ts startServer) on a scratch database and, on the
 * driver's request, creates the N tasks one at a time through the service layer the HTTP
 * route calls (TaskService.create, the `service` create mode). The `batch` and `http` modes
 * create over HTTP from the driver instead.
 *
 * Environment: BENCH_DB=sqlite|mysql, BENCH_MYSQL_URL, BENCH_SLOTS (MAX_TASKS_PER_CLIENT),
 * BENCH_MAX_CLIENTS, BENCH_COUNT_SQL=1 (count statements; costs time, for profiling runs).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire, findSourceMap } from 'node:module';
import { createConnection } from 'mysql2/promise';
import type { Principal } from '../src/auth/principal.js';
import { generateToken, TokenService } from '../src/auth/token-service.js';
import { testConfig } from '../test/helpers/server.js';
import { startServer } from '../src/main.js';
import { systemClock } from '../src/storage/values.js';
import type { TaskService } from '../src/tasks/task-service.js';
import {
  now,
  type ChildMessage,
  type ChildRequest,
  type CpuUse,
  type CreateReport,
  type SqlStats,
  type VerifyResult,
} from './common.js';

const dialect = process.env.BENCH_DB === 'mysql' ? 'mysql' : 'sqlite';
const mysqlUrl = (process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306').replace(/\/$/, '');
const slots = Number(process.env.BENCH_SLOTS ?? '10');
const maxClients = Number(process.env.BENCH_MAX_CLIENTS ?? '1000');
const countSql = process.env.BENCH_COUNT_SQL === '1';

function send(m: ChildMessage): void {
  process.send?.(m);
}

// ---- statement counting (profiling runs only) ---------------------------------------

const sqlCounts = new Map<string, { count: number; ms: number }>();
function countStatement(text: string, ms = 0): void {
  const key = text
    .replace(/\s+/g, ' ')
    .replace(/\((\?, )+\?\)/g, '(?…)')
    .trim()
    .slice(0, 160);
  const c = sqlCounts.get(key);
  if (c) {
    c.count++;
    c.ms += ms;
  } else sqlCounts.set(key, { count: 1, ms });
}

if (countSql) {
  const require = createRequire(import.meta.url);
  // SQLite: the server keeps its statements prepared, so each execution is counted (and timed:
  // better-sqlite3 runs them synchronously) on the Statement prototype.
  const Sqlite = require('better-sqlite3') as new (file: string) => {
    prepare(sql: string): object;
    close(): void;
  };
  const probe = new Sqlite(':memory:');
  const Statement = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<string, unknown>;
  probe.close();
  for (const method of ['run', 'all', 'get', 'iterate']) {
    const original = Statement[method] as (...a: unknown[]) => unknown;
    Statement[method] = function (this: { source: string }, ...a: unknown[]) {
      const t0 = performance.now();
      try {
        return original.apply(this, a);
      } finally {
        countStatement(this.source, performance.now() - t0);
      }
    };
  }
  // MySQL: every statement goes through Connection.query (counted, not timed: it is async).
  const mysql = require('mysql2') as { Connection: { prototype: { query(...a: unknown[]): unknown } } };
  const query = mysql.Connection.prototype.query;
  mysql.Connection.prototype.query = function (this: unknown, ...args: unknown[]) {
    const first = args[0];
    const text = typeof first === 'string' ? first : (first as { sql?: string } | null)?.sql;
    if (typeof text === 'string') countStatement(text);
    return query.apply(this, args);
  };
}

// ---- scratch database ---------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'aifarm-bench-'));
const mysqlName = `aifarm_bench_${randomBytes(5).toString('hex')}`;
const databaseUrl = dialect === 'sqlite' ? join(dir, 'bench.sqlite') : `${mysqlUrl}/${mysqlName}`;

async function dropDatabase(): Promise<void> {
  if (dialect === 'mysql') {
    const conn = await createConnection(mysqlUrl);
    try {
      await conn.query(`DROP DATABASE IF EXISTS \`${mysqlName}\``);
    } finally {
      await conn.end();
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

const adminToken = generateToken();
const config = testConfig(
  { url: databaseUrl, dir },
  {
    LOG_LEVEL: 'info',
    MAX_TASKS_PER_CLIENT: slots,
    MAX_CLIENTS: maxClients,
    // Every simulated worker shares one token and one address (loopback).
    MAX_CONNECTIONS_PER_TOKEN: maxClients,
    MAX_CONNECTIONS_PER_ADDRESS: maxClients,
    ADMIN_TOKEN: adminToken,
  },
);

// A server that fails to start still leaves its scratch database behind: drop it, then fail.
const server = await startServer(config).catch(async (err: unknown) => {
  await dropDatabase().catch(() => undefined);
  throw err;
});
const db = server.database.db;
// The server's own task service: creates go through its group commit like API creates.
const tasks: TaskService = server.services.tasks;
const principal: Principal = { kind: 'token', id: 'bench', name: 'bench', role: 'admin' };
const worker = await new TokenService(db, systemClock).create('bench-workers', 'worker', 'bench');

// ---- task creation ------------------------------------------------------------------

const stamps: [number, number][] = [];
let firstCreateAt = 0;
let createsDoneAt = 0;
let cpuMark = process.cpuUsage();

/**
 * TaskService.create, `concurrency` calls in flight, each stamped when it is called; with
 * `rate`, call i starts no earlier than i / rate seconds after the first.
 */
async function createViaService(n: number, concurrency: number, rate?: number): Promise<void> {
  let next = 0;
  const start = now();
  const lane = async () => {
    while (next < n) {
      const i = next++;
      if (rate) {
        const wait = start + (i * 1000) / rate - now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      const t = now();
      const task = await tasks.create(principal, { type: 'noop', requirements: {}, config: {} });
      stamps.push([task.id, t]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
}

// ---- checks -------------------------------------------------------------------------

async function verify(): Promise<VerifyResult> {
  const byStatus: Record<string, number> = {};
  const statuses = await db
    .selectFrom('tasks')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('status')
    .execute();
  for (const r of statuses) byStatus[r.status] = Number(r.n);
  const agg = await db
    .selectFrom('task_assignments')
    .select((eb) => [
      eb.fn.countAll<number>().as('rows'),
      eb.fn.count<number>('task_id').distinct().as('tasks'),
      eb.fn.min<number>('attempt').as('min_attempt'),
      eb.fn.max<number>('attempt').as('max_attempt'),
    ])
    .executeTakeFirstOrThrow();
  const odd = await db
    .selectFrom((eb) =>
      eb
        .selectFrom('task_assignments')
        .select('task_id')
        .groupBy('task_id')
        .having((h) => h.fn.countAll(), '<>', 1)
        .as('t'),
    )
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return {
    byStatus,
    assignmentRows: Number(agg.rows),
    tasksWithAssignments: Number(agg.tasks),
    tasksNotExactlyOne: Number(odd.n),
    minAttempt: agg.min_attempt === null ? null : Number(agg.min_attempt),
    maxAttempt: agg.max_attempt === null ? null : Number(agg.max_attempt),
  };
}

function sqlStats(): SqlStats {
  const statements = [...sqlCounts.entries()]
    .map(([sql, c]) => ({ sql, count: c.count, ms: c.ms }))
    .sort((a, b) => b.count - a.count);
  const total = statements.reduce((s, x) => s + x.count, 0);
  const transactions = statements
    .filter((s) => /^(begin|start transaction)/i.test(s.sql))
    .reduce((s, x) => s + x.count, 0);
  return { statements, total, transactions };
}

// ---- requests from the driver -------------------------------------------------------

let profiler: Session | null = null;

async function handle(req: ChildRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'create': {
      firstCreateAt = now();
      await createViaService(req.n, req.concurrency, req.rate);
      createsDoneAt = now();
      return { firstCreateAt, createsDoneAt };
    }
    case 'cpu-mark':
      cpuMark = process.cpuUsage();
      return null;
    case 'collect': {
      const used = process.cpuUsage(cpuMark);
      const cpu: CpuUse = { user: used.user / 1e6, system: used.system / 1e6 };
      const report: CreateReport = { stamps, firstCreateAt, createsDoneAt, cpu };
      return report;
    }
    case 'verify':
      return verify();
    case 'profile-start':
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
      await profiler.post('Profiler.start');
      return null;
    case 'profile-stop': {
      if (!profiler) throw new Error('profiler not started');
      const { profile } = await profiler.post('Profiler.stop');
      // tsx compiles each module to one line: point the frames back at the TypeScript lines.
      for (const node of profile.nodes) {
        const f = node.callFrame;
        if (!f.url.startsWith('file:') || f.url.includes('/node_modules/')) continue;
        const entry = findSourceMap(f.url)?.findEntry(f.lineNumber, f.columnNumber);
        if (entry && 'originalLine' in entry) {
          f.lineNumber = entry.originalLine;
          f.columnNumber = entry.originalColumn;
        }
      }
      writeFileSync(req.file, JSON.stringify(profile));
      profiler.disconnect();
      profiler = null;
      return req.file;
    }
    case 'sql-reset':
      sqlCounts.clear();
      return null;
    case 'sql-stats':
      return sqlStats();
    case 'stop':
      await server.stop();
      await dropDatabase();
      return null;
  }
}

process.on('message', (raw) => {
  const req = raw as ChildRequest;
  handle(req).then(
    (value) => {
      send({ type: 'reply', id: req.id, ok: true, value });
      if (req.cmd === 'stop') setImmediate(() => process.exit(0));
    },
    (err: unknown) =>
      send({
        type: 'reply',
        id: req.id,
        ok: false,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      }),
  );
});
// The driver gone means nobody will ask us to stop: clean up and leave.
process.on('disconnect', () => {
  void server
    .stop()
    .then(dropDatabase)
    .finally(() => process.exit(1));
});

send({ type: 'ready', wsUrl: server.wsUrl, httpUrl: server.httpUrl, adminToken, workerToken: worker.token });
