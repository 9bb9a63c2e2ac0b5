/**
 * Dispatch throughput benchmark (issue 3, point 11): N no-op tasks through 100 simulated
 * workers, end to end, on AI Farm with SQLite, AI Farm with MariaDB, and BullMQ on Redis,
 * side by side in one run. See docs/benchmarks.md.
 *
 *   npx tsx bench/dispatch.ts                 # the full run (3 rounds and the extra runs)
 *   npx tsx bench/dispatch.ts --profile       # also one profiled AI Farm run per database
 *   npx tsx bench/dispatch.ts --quick         # small, to check the set-up
 *   npx tsx bench/dispatch.ts --help
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createConnection } from 'mysql2/promise';
import * as prettier from 'prettier';
import { runBullmq, type BullmqResult } from './bullmq-run.js';
import { median, type CreateMode } from './common.js';
import { summariseProfile, type ProfileSummary } from './cpuprofile.js';
import {
  describe,
  printProfile,
  summarise,
  table,
  type Group,
  type RunResult,
  type Summary,
} from './dispatch-report.js';
import { runFarm, type FarmResult } from './farm-run.js';

const HELP = `Usage: npx tsx bench/dispatch.ts [options]

  --n <count>            tasks per SQLite and BullMQ run (default 20000)
  --n-mysql <count>      tasks per MariaDB run (default 2000)
  --runs <count>         rounds of the three systems; medians are reported (default 3; 0 skips)
  --workers <count>      simulated AI Farm workers = BullMQ concurrency (default 100)
  --slots <count>        MAX_TASKS_PER_CLIENT of the AI Farm server (default 4)
  --create <mode>        how the rounds create AI Farm tasks (default batch):
                           batch    POST /api/tasks/batch from the driver, --chunk tasks per
                                    request (as BullMQ's addBulk)
                           service  TaskService.create in the server, one task per call
                           http     POST /api/tasks from the driver, one task per request
  --chunk <count>        tasks per POST /api/tasks/batch and per BullMQ addBulk (default 1000)
  --concurrency <count>  batch and http: requests in flight; service: create() calls in flight
                         (default: batch 4, others 32)
  --extras <list>        one more run per database for each of these create modes,
                         comma-separated, or "none" (default "service,http")
  --extra-n <count>      tasks of the service extra runs (default --n; MariaDB at most --n-mysql)
  --http-n <count>       tasks of the http extra runs (default 1000; MariaDB at most --n-mysql)
  --paced-rate <count>   one more run per system creating tasks one by one at this rate
                         (tasks/s), for the latency without a backlog; 0 skips (default 100)
  --paced-n <count>      tasks of the paced runs (default 300)
  --profile              one more AI Farm run per database with a CPU profile of the server
                         and SQL statements counted (adds about a minute)
  --profile-only         just the profiled runs: --profile --runs 0 --paced-rate 0 --extras none,
                         results in bench/results/dispatch-profile-<date>.json
  --only <list>          sqlite,mysql,bullmq (default all three)
  --mysql-url <url>      MariaDB server (default mysql://root@127.0.0.1:3306); a scratch
                         database is created and dropped for each run
  --redis-url <url>      Redis server (default redis://127.0.0.1:6379); each run uses a
                         unique queue and obliterates it
  --timeout <seconds>    longest one run may take (default 120)
  --out <file>           results JSON (default bench/results/dispatch-<date>.json)
  --quick                --n 2000 --n-mysql 1000 --runs 1 --http-n 500 --paced-n 200
`;

const { values: args } = parseArgs({
  options: {
    n: { type: 'string' },
    'n-mysql': { type: 'string' },
    runs: { type: 'string' },
    workers: { type: 'string' },
    slots: { type: 'string' },
    create: { type: 'string' },
    chunk: { type: 'string' },
    concurrency: { type: 'string' },
    extras: { type: 'string' },
    'extra-n': { type: 'string' },
    'http-n': { type: 'string' },
    'paced-rate': { type: 'string' },
    'paced-n': { type: 'string' },
    profile: { type: 'boolean' },
    'profile-only': { type: 'boolean' },
    only: { type: 'string' },
    'mysql-url': { type: 'string' },
    'redis-url': { type: 'string' },
    timeout: { type: 'string' },
    out: { type: 'string' },
    quick: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function int(v: string | undefined, def: number, name: string, min = 1): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

const quick = args.quick === true;
const profileOnly = args['profile-only'] === true;
const N = int(args.n, quick ? 2000 : 20_000, 'n');
const N_MYSQL = int(args['n-mysql'], quick ? 1000 : 2000, 'n-mysql');
const RUNS = profileOnly ? 0 : int(args.runs, quick ? 1 : 3, 'runs', 0);
const WORKERS = int(args.workers, 100, 'workers');
const SLOTS = int(args.slots, 4, 'slots');
const MODES: readonly CreateMode[] = ['batch', 'service', 'http'];
const CREATE = (args.create ?? 'batch') as CreateMode;
if (!MODES.includes(CREATE)) throw new Error(`--create must be one of ${MODES.join(', ')}, got ${CREATE}`);
const CHUNK = int(args.chunk, 1000, 'chunk');
if (CHUNK > 1000)
  throw new Error(`--chunk must be at most 1000 (POST /api/tasks/batch's limit), got ${CHUNK}`);
// --concurrency applies to the rounds' mode; the extras keep their defaults.
const concurrencyFor = (mode: CreateMode) =>
  mode === CREATE
    ? int(args.concurrency, mode === 'batch' ? 4 : 32, 'concurrency')
    : mode === 'batch'
      ? 4
      : 32;
const EXTRAS = (profileOnly ? 'none' : (args.extras ?? 'service,http'))
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s && s !== 'none' && s !== CREATE) as CreateMode[];
for (const e of EXTRAS) if (!MODES.includes(e)) throw new Error(`--extras: unknown create mode ${e}`);
const EXTRA_N = int(args['extra-n'], N, 'extra-n');
const HTTP_N = int(args['http-n'], quick ? 500 : 1000, 'http-n');
const PACED_RATE = profileOnly ? 0 : int(args['paced-rate'], 100, 'paced-rate', 0);
const PACED_N = int(args['paced-n'], quick ? 200 : 300, 'paced-n');
const PROFILE = args.profile === true || profileOnly;
const ONLY = new Set((args.only ?? 'sqlite,mysql,bullmq').split(',').map((s) => s.trim()));
const MYSQL_URL = args['mysql-url'] ?? 'mysql://root@127.0.0.1:3306';
const REDIS_URL = args['redis-url'] ?? 'redis://127.0.0.1:6379';
const TIMEOUT_MS = int(args.timeout, 120, 'timeout') * 1000;

const here = dirname(fileURLToPath(import.meta.url));
const stamp = new Date().toISOString().slice(0, 10);
const OUT = args.out ?? join(here, 'results', `dispatch-${profileOnly ? 'profile-' : ''}${stamp}.json`);
const PROFILE_DIR = join(here, 'results', 'profiles');

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function errorText(err: unknown): string {
  return `run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
}

const NO_LATENCY = { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };

async function farm(
  db: 'sqlite' | 'mysql',
  mode: CreateMode,
  n: number,
  opts: { rate?: number; profile?: boolean } = {},
): Promise<FarmResult> {
  const profileFile = opts.profile
    ? join(PROFILE_DIR, `server-${db}-${mode}-${stamp}.cpuprofile`)
    : undefined;
  if (profileFile) mkdirSync(PROFILE_DIR, { recursive: true });
  const settings = {
    n,
    workers: WORKERS,
    slots: SLOTS,
    concurrency: concurrencyFor(mode),
    chunk: CHUNK,
    rate: opts.rate,
  };
  const r = await runFarm({
    db,
    mysqlUrl: MYSQL_URL,
    mode,
    timeoutMs: TIMEOUT_MS,
    profileFile,
    countSql: opts.profile,
    ...settings,
  }).catch((err: unknown): FarmResult => ({
    system: db,
    mode,
    ...settings,
    ok: false,
    problems: [errorText(err)],
    seconds: Number.NaN,
    tasksPerSec: Number.NaN,
    createsPerSec: Number.NaN,
    drainTasksPerSec: null,
    latencyMs: NO_LATENCY,
    duplicateTaskMessages: 0,
    workerErrors: [],
    verify: null,
    cpu: { server: null, driver: null, database: null },
  }));
  log(`  ${describe(r)}${opts.profile ? ' [profiled, SQL counted]' : ''}`);
  return r;
}

async function bull(n: number, rate?: number): Promise<BullmqResult> {
  const r = await runBullmq({
    redisUrl: REDIS_URL,
    n,
    concurrency: WORKERS,
    chunk: CHUNK,
    timeoutMs: TIMEOUT_MS,
    rate,
  }).catch((err: unknown): BullmqResult => ({
    system: 'bullmq',
    n,
    rate,
    ok: false,
    problems: [errorText(err)],
    seconds: Number.NaN,
    tasksPerSec: Number.NaN,
    addsPerSec: Number.NaN,
    latencyMs: NO_LATENCY,
    processed: 0,
    duplicates: 0,
    counts: {},
    cpu: { driver: null, redis: null },
  }));
  log(`  ${describe(r)}`);
  return r;
}

/** The commit measured, and whether src/ had uncommitted changes (null outside a git checkout). */
function sourceVersion(): { commit: string; srcDirty: boolean } | null {
  try {
    const cwd = join(here, '..');
    const git = (...a: string[]) =>
      execFileSync('git', a, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const commit = git('rev-parse', 'HEAD');
    const dirty = git('status', '--porcelain', '--', 'src');
    return { commit, srcDirty: dirty.length > 0 };
  } catch {
    return null;
  }
}

async function versions(): Promise<{ mariadb: string | null; redis: string | null }> {
  let mariadb: string | null = null;
  let redis: string | null = null;
  try {
    const conn = await createConnection(MYSQL_URL);
    const [rows] = await conn.query('SELECT VERSION() AS v');
    mariadb = String((rows as { v: string }[])[0]?.v);
    await conn.end();
  } catch (err) {
    log(`MariaDB not reachable: ${(err as Error).message}`);
  }
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    redis = /redis_version:(\S+)/.exec(await r.info('server'))?.[1] ?? null;
  } catch (err) {
    log(`Redis not reachable: ${(err as Error).message}`);
  } finally {
    r.disconnect();
  }
  return { mariadb, redis };
}

async function main(): Promise<void> {
  const started = Date.now();
  const v = await versions();
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    loadavgBefore: loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    mariadb: v.mariadb,
    redis: v.redis,
  };
  log(`dispatch benchmark: ${JSON.stringify(machine)}`);
  log(
    `N=${N} (MariaDB ${N_MYSQL}), ${RUNS} round(s), ${WORKERS} workers, MAX_TASKS_PER_CLIENT=${SLOTS}, ` +
      `AI Farm tasks created by ${CREATE} (concurrency ${concurrencyFor(CREATE)}` +
      `${CREATE === 'batch' ? `, ${CHUNK} per request` : ''}), BullMQ addBulk chunks of ${CHUNK}`,
  );

  // The machine is shared: the 1-minute load average after each run shows how noisy it was.
  const runs: { group: Group; loadavg1: number; result: RunResult }[] = [];
  const record = (group: Group, result: RunResult) =>
    runs.push({ group, loadavg1: Math.round((loadavg()[0] ?? 0) * 100) / 100, result });
  for (let round = 1; round <= RUNS; round++) {
    log(`round ${round}/${RUNS}`);
    if (ONLY.has('sqlite')) record('rounds', await farm('sqlite', CREATE, N));
    if (ONLY.has('mysql')) record('rounds', await farm('mysql', CREATE, N_MYSQL));
    if (ONLY.has('bullmq')) record('rounds', await bull(N));
  }
  if (PACED_RATE > 0) {
    log(`paced: ${PACED_N} tasks created one by one at ${PACED_RATE}/s`);
    if (ONLY.has('sqlite')) record('paced', await farm('sqlite', 'service', PACED_N, { rate: PACED_RATE }));
    if (ONLY.has('mysql')) record('paced', await farm('mysql', 'service', PACED_N, { rate: PACED_RATE }));
    if (ONLY.has('bullmq')) record('paced', await bull(PACED_N, PACED_RATE));
  }
  for (const mode of EXTRAS) {
    log(`extra: tasks created by ${mode}`);
    const n = mode === 'http' ? HTTP_N : EXTRA_N;
    if (ONLY.has('sqlite')) record(mode, await farm('sqlite', mode, n));
    if (ONLY.has('mysql')) record(mode, await farm('mysql', mode, Math.min(n, N_MYSQL)));
  }
  const profiles: (FarmResult & { summary: ProfileSummary | null })[] = [];
  if (PROFILE) {
    log('profiling');
    for (const db of ['sqlite', 'mysql'] as const) {
      if (!ONLY.has(db)) continue;
      const r = await farm(db, CREATE, db === 'sqlite' ? N : N_MYSQL, { profile: true });
      record('profile', r);
      profiles.push({ ...r, summary: r.profile ? summariseProfile(r.profile) : null });
    }
  }

  const pick = (group: Group, system: string) =>
    runs.filter((r) => r.group === group && r.result.system === system).map((r) => r.result);
  const bullRounds = pick('rounds', 'bullmq');
  const bullmqTps = bullRounds.length ? median(bullRounds.map((r) => r.tasksPerSec)) : null;
  const summaries: Summary[] = [];
  for (const group of ['rounds', 'paced', 'batch', 'service', 'http', 'profile'] as const) {
    for (const system of ['sqlite', 'mysql', 'bullmq']) {
      const s = summarise(group, pick(group, system), bullmqTps);
      if (s) summaries.push(s);
    }
  }

  const md = table(summaries);
  process.stdout.write(`\n${md}\n\n`);
  for (const p of profiles) printProfile(p);

  mkdirSync(dirname(OUT), { recursive: true });
  const result = {
    benchmark: 'dispatch',
    date: new Date().toISOString(),
    command: `npx tsx bench/dispatch.ts ${process.argv.slice(2).join(' ')}`.trim(),
    source: sourceVersion(),
    machine: { ...machine, loadavgAfter: loadavg().map((l) => Math.round(l * 100) / 100) },
    settings: {
      n: N,
      nMysql: N_MYSQL,
      runs: RUNS,
      workers: WORKERS,
      maxTasksPerClient: SLOTS,
      create: CREATE,
      concurrency: concurrencyFor(CREATE),
      chunk: CHUNK,
      extras: EXTRAS,
      extraN: EXTRA_N,
      httpN: HTTP_N,
      paced: PACED_RATE > 0 ? { rate: PACED_RATE, n: PACED_N } : null,
      bullmq: { workers: 1, concurrency: WORKERS, addBulkChunk: CHUNK },
    },
    goal: { sqliteVsBullmq: 1, mysqlVsBullmq: 0.3, duplicates: 0 },
    summary: summaries,
    markdown: md,
    runs: runs.map(({ group, loadavg1, result }) => ({
      group,
      loadavg1,
      ...result,
      ...('sql' in result && result.sql
        ? { sql: { ...result.sql, statements: result.sql.statements.slice(0, 40) } }
        : {}),
    })),
    profiles: profiles.map((p) => ({ system: p.system, file: p.profile, summary: p.summary })),
    wallSeconds: Math.round((Date.now() - started) / 1000),
  };
  // Formatted as the repository's `prettier --check .` expects.
  const options = (await prettier.resolveConfig(OUT)) ?? {};
  writeFileSync(OUT, await prettier.format(JSON.stringify(result), { ...options, parser: 'json' }));
  log(`results: ${relative(process.cwd(), OUT)} (${result.wallSeconds} s)`);
  const failed = runs.filter((r) => !r.result.ok);
  if (failed.length > 0) {
    log(`${failed.length} run(s) failed their checks`);
    process.exitCode = 1;
  }
}

await main();
