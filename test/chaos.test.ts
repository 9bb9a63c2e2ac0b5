import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createConnection } from 'mysql2/promise';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Dialect } from '../src/storage/db.js';
import {
  assignmentsOf,
  chaosSeed,
  formatSummary,
  newToken,
  request,
  seededRandom,
  startWorkerProcess,
  type ChaosFigure,
  type Json,
  type WorkerProcess,
} from './helpers/chaos.js';
import {
  ChaosRank,
  expectedAggregate,
  readF32,
  samplesOf,
  UploadLedger,
  type JournalRow,
} from './helpers/chaos-training.js';
import { serverEnv, startCliServer, type CliServer } from './helpers/cli.js';
import { freePort } from './helpers/ports.js';
import { sleep, waitFor } from './helpers/wait.js';
import { createTestDatabase, type TestDatabase } from './helpers/db.js';
import { startPrivateMariadb } from './helpers/private-mariadb.js';
import { startTcpProxy } from './helpers/tcp-proxy.js';

/**
 * The chaos suite (issue 6): real `ai-farm server` and `ai-farm worker` processes, real
 * databases, and faults injected at moments drawn from a seeded PRNG (CHAOS_SEED replays a
 * run). Each case counts what was acknowledged and what the server finally counted; the
 * figures are printed at the end. docs/operations.md, "Chaos suite".
 */
const SEED = chaosSeed();
const random = seededRandom(SEED);
const figures: ChaosFigure[] = [];
console.info(`chaos suite: CHAOS_SEED=${SEED}`);

const cleanups: (() => Promise<unknown>)[] = [];
/** What to print when a case fails: worker outputs, server logs. */
const diagnostics: (() => string)[] = [];
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') for (const d of diagnostics.splice(0)) console.info(d());
  diagnostics.length = 0;
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(() => {
  console.info(formatSummary(SEED, figures));
});

/**
 * A command task that holds (progress 5%) until the file $GO exists, then reports five
 * steps 0.2 s apart and a result: the test decides when work can finish. Bounded: it gives
 * up holding after two minutes.
 */
const GATED_COMMAND =
  'n=0; while [ ! -e "$GO" ] && [ $n -lt 600 ]; do n=$((n+1)); echo \'{"progress": 5}\'; sleep 0.2; done; ' +
  'i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo "{\\"progress\\": $((i*20))}"; sleep 0.2; done; ' +
  `echo '{"result": {"done": 1}}'`;

interface Farm {
  server: CliServer;
  db: TestDatabase;
  admin: string;
  workerToken: string;
  api(method: string, path: string, body?: unknown): ReturnType<typeof request>;
}

async function startFarm(
  db: TestDatabase,
  extra: Record<string, string> = {},
  databaseUrl = db.url,
): Promise<Farm> {
  const admin = newToken();
  const server = await startCliServer([], serverEnv({ url: databaseUrl, dir: db.dir }, admin, extra));
  cleanups.push(() => server.stop('SIGKILL'));
  diagnostics.push(() => {
    let log = '';
    try {
      log = readFileSync(join(db.dir, 'logs', 'server.log'), 'utf8')
        .split('\n')
        .slice(-60)
        .join('\n');
    } catch {
      // no log
    }
    return `--- server ---\n${server.stdout()}\n${server.stderr()}\n${log}`;
  });
  const api = (method: string, path: string, body?: unknown) =>
    request(server.url, method, path, body, admin);
  const tok = await api('POST', '/api/tokens', { name: 'chaos-workers', role: 'worker' });
  expect(tok.status).toBe(201);
  return { server, db, admin, workerToken: tok.body.token as string, api };
}

function worker(farm: Farm, name: string, serverUrl = farm.server.url): WorkerProcess {
  const w = startWorkerProcess(serverUrl, farm.workerToken, name, farm.db.dir);
  cleanups.push(() => w.kill());
  diagnostics.push(() => `--- worker ${name} ---\n${w.output()}`);
  return w;
}

/** The client id a worker registered with (its id file), once it has. */
const clientIdOf = (farm: Farm, w: WorkerProcess) =>
  waitFor(
    `${w.name} to register`,
    () => {
      try {
        return readFileSync(join(farm.db.dir, `${w.name}.id`), 'utf8').trim() || undefined;
      } catch {
        return undefined;
      }
    },
    30_000,
  );

async function taskOf(farm: Farm, id: number): Promise<Json> {
  const r = await farm.api('GET', `/api/tasks/${id}`);
  if (r.status !== 200) throw new Error(`GET task ${id}: ${r.status}`);
  return r.body;
}

/** Waits for the task that worker `a` lost to complete on worker `b`. */
const completedElsewhere = (farm: Farm, taskId: number) =>
  waitFor(
    'the task to complete on the other worker',
    async () => (await taskOf(farm, taskId)).status === 'completed',
    60_000,
  );

/**
 * A command task held by worker `a` (running, progress reported), and a second worker `b`
 * registered only then, so the retry can only go to `b`.
 */
async function taskRunningOn(farm: Farm, a: WorkerProcess, bName: string) {
  const aId = await clientIdOf(farm, a);
  const go = join(farm.db.dir, `go-${bName}`);
  const created = await farm.api('POST', '/api/tasks', {
    type: 'command',
    requirements: {},
    config: { command: GATED_COMMAND, env: { GO: go } },
  });
  expect(created.status).toBe(201);
  const taskId = created.body.id as number;
  await waitFor(
    'the task to run on the first worker',
    async () => {
      const t = await taskOf(farm, taskId);
      return t.status === 'running' && t.progress > 0;
    },
    30_000,
  );
  const first = await assignmentsOf(farm.server.url, farm.admin, taskId);
  expect(first.map((x) => [x.client_id, x.attempt])).toEqual([[aId, 1]]);
  const b = worker(farm, bName);
  const bId = await clientIdOf(farm, b);
  /** Lets the task's command (on whichever worker) finish. */
  const release = () => writeFileSync(go, 'go');
  return { taskId, aId, b, bId, release };
}

/** The task completed, once: one completed attempt on `bId`, `aId`'s attempt lost. */
async function expectCompletedOnceElsewhere(farm: Farm, taskId: number, aId: string, bId: string) {
  const t = await taskOf(farm, taskId);
  expect(t.status).toBe('completed');
  expect(t.result).toMatchObject({ done: 1 });
  const rows = await assignmentsOf(farm.server.url, farm.admin, taskId);
  const completed = rows.filter((r) => r.status === 'completed');
  expect(completed).toHaveLength(1);
  expect(completed[0]).toMatchObject({ client_id: bId, attempt: 2 });
  expect(rows.find((r) => r.attempt === 1)).toMatchObject({ client_id: aId, status: 'lost' });
  expect(rows).toHaveLength(2);
  return rows;
}

/** The figure of a case run once that lost and duplicated nothing. */
const oneCycle = (name: string, recoverMs: number, note?: string): ChaosFigure => ({
  name,
  cycles: 1,
  lost: 0,
  duplicated: 0,
  recoverMs: [recoverMs],
  ...(note === undefined ? {} : { note }),
});

/** Worker `a` reports its result late; the server refuses it as stale (as the worker prints it). */
async function lateResultRefused(a: WorkerProcess, taskId: number) {
  await waitFor('the late result to be refused', () => /result not accepted/.test(a.output()), 60_000);
  expect(a.output()).toMatch(
    new RegExp(`task ${taskId}: result not accepted \\(task ${taskId} is not assigned`),
  );
}

describe('chaos: workers', () => {
  /** A server on a fresh SQLite database whose leases end 3 s after their worker goes quiet. */
  const workerChaosFarm = async () => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    return startFarm(db, { CONNECTION_TIMEOUT: '3' });
  };

  it('a worker killed with SIGKILL mid-task: the task is retried on another worker and completes once', async () => {
    const farm = await workerChaosFarm();
    const a = worker(farm, 'killed');
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'survivor');
    await sleep(random() * 1000);
    const killedAt = Date.now();
    a.signal('SIGKILL');
    release();
    await completedElsewhere(farm, taskId);
    const recoverMs = Date.now() - killedAt;
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(oneCycle('worker SIGKILL mid-task', recoverMs));
    expect(farm.server.alive()).toBe(true);
  }, 120_000);

  it('a worker stopped (SIGSTOP) past its lease: its late result is refused as stale, the task completes once elsewhere', async () => {
    const farm = await workerChaosFarm();
    const a = worker(farm, 'frozen');
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'healthy');
    await sleep(random() * 500);
    const stoppedAt = Date.now();
    a.signal('SIGSTOP');
    cleanups.push(async () => a.signal('SIGCONT'));
    // Its command goes on and finishes while the worker is stopped.
    release();
    await completedElsewhere(farm, taskId);
    const recoverMs = Date.now() - stoppedAt;
    // The stopped worker's command has finished meanwhile: on SIGCONT it reports its result.
    a.signal('SIGCONT');
    await lateResultRefused(a, taskId);
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(
      oneCycle('worker SIGSTOP past its lease', recoverMs, 'late task_result refused (stale_attempt)'),
    );
    expect(farm.server.alive()).toBe(true);
  }, 120_000);

  it("a network path that drops a worker's traffic: the heartbeat timeout frees its lease, the task completes once elsewhere", async () => {
    const farm = await workerChaosFarm();
    const port = Number(new URL(farm.server.url).port);
    const proxy = await startTcpProxy('127.0.0.1', port);
    cleanups.push(() => proxy.close());
    const a = worker(farm, 'partitioned', `http://127.0.0.1:${proxy.port}`);
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'connected');
    await sleep(random() * 500);
    const cutAt = Date.now();
    proxy.freeze();
    release();
    await waitFor(
      'the lease to move to the other worker',
      async () => {
        const rows = await assignmentsOf(farm.server.url, farm.admin, taskId);
        return rows.some((r) => r.client_id === bId);
      },
      60_000,
    );
    const replacedMs = Date.now() - cutAt;
    await completedElsewhere(farm, taskId);
    const rows = await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    expect(String(rows[0].error)).toMatch(/silent/i);
    // The partition heals: the worker comes back, and its result is refused as stale.
    proxy.thaw();
    await lateResultRefused(a, taskId);
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(
      oneCycle(
        'worker traffic blackholed',
        replacedMs,
        `lease re-placed ${replacedMs} ms after the cut (CONNECTION_TIMEOUT 3 s)`,
      ),
    );
  }, 150_000);
});

/**
 * Kill cycles of case 1: 20 on SQLite, 5 on MariaDB (a cycle takes 5-10 s on a 2-core
 * machine, and the suite must stay within about 6 minutes); CHAOS_CYCLES overrides both.
 */
const cyclesFor = (dialect: Dialect) =>
  Math.max(1, Number(process.env.CHAOS_CYCLES ?? (dialect === 'sqlite' ? 20 : 5)));
const ROUNDS = 8;
const WORLD = 3;

async function journalOf(db: TestDatabase): Promise<JournalRow[]> {
  const sqlText = 'SELECT task_id, round, `rank`, attempt, num_samples FROM round_updates';
  if (db.dialect === 'sqlite') {
    const conn = new Database(db.url, { readonly: true });
    try {
      return conn.prepare(sqlText.replace(/`/g, '"')).all() as JournalRow[];
    } finally {
      conn.close();
    }
  }
  const conn = await createConnection(db.url);
  try {
    const [rows] = await conn.query(sqlText);
    return (rows as JournalRow[]).map((r) => ({ ...r, num_samples: Number(r.num_samples) }));
  } finally {
    await conn.end();
  }
}

describe.each(['sqlite', 'mysql'] as Dialect[])('chaos: server killed during training (%s)', (dialect) => {
  const CYCLES = cyclesFor(dialect);
  it(`SIGKILL and restart at random moments, ${CYCLES} times: no acknowledged update lost or counted twice`, async () => {
    const db = await createTestDatabase(dialect);
    cleanups.push(() => db.drop());
    const admin = newToken();
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = serverEnv(db, admin, {
      // A fixed port, so the workers find the restarted server where the old one was.
      SERVER_PORT: String(port),
      CONNECTION_TIMEOUT: '30',
      LOG_LEVEL: 'warn',
    });
    const launch = async (): Promise<CliServer> => {
      for (let i = 0; ; i++) {
        try {
          return await startCliServer([], env, { timeoutMs: 60_000 });
        } catch (err) {
          // The old socket may linger a moment; anything else is a real failure.
          if (i >= 10 || !/EADDRINUSE/.test(String(err))) throw err;
          await sleep(300);
        }
      }
    };
    let server = await launch();
    cleanups.push(() => server.stop('SIGKILL'));
    const api = (method: string, path: string, body?: unknown) => request(base, method, path, body, admin);
    const tok = await api('POST', '/api/tokens', { name: 'chaos-ranks', role: 'worker' });
    expect(tok.status).toBe(201);
    const ledger = new UploadLedger();
    const ranks = Array.from(
      { length: WORLD },
      (_, i) =>
        new ChaosRank({
          wsUrl: `ws://127.0.0.1:${port}/ws`,
          httpUrl: base,
          token: tok.body.token as string,
          id: `chaos-rank-${i}`,
          ledger,
          random,
          trainMs: 300,
        }),
    );
    cleanups.push(() => Promise.all(ranks.map((r) => r.close())));
    await Promise.all(ranks.map((r) => r.connect()));

    const tasks: number[] = [];
    const newTask = async () => {
      const r = await api('POST', '/api/tasks', {
        type: 'chaos_train',
        requirements: {},
        world_size: WORLD,
        config: { rounds: ROUNDS },
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      tasks.push(r.body.id as number);
    };
    const statusOf = async (id: number) => (await api('GET', `/api/tasks/${id}`)).body.status as string;
    const acks = () =>
      [...ledger.entries.values()].reduce(
        (s, e) => s + e.created + e.duplicates + (e.acceptedFlag ? 1 : 0),
        0,
      );

    await newTask();
    const recoverMs: number[] = [];
    let cycles = 0;
    while (cycles < CYCLES) {
      const current = tasks[tasks.length - 1] as number;
      const status = await statusOf(current);
      expect(['pending', 'running', 'completed']).toContain(status);
      if (status === 'completed') await newTask();
      // A random moment: mid-upload, mid-aggregation, between rounds, while ranks reconnect.
      await sleep(200 + random() * 1500);
      const before = acks();
      const killedAt = Date.now();
      await server.stop('SIGKILL');
      cycles++;
      server = await launch();
      // Recovered: the ranks are back and the training moves (an upload acknowledged, or the task done).
      await waitFor(
        `training to move after kill ${cycles}`,
        async () => acks() > before || (await statusOf(tasks[tasks.length - 1] as number)) === 'completed',
        90_000,
        { everyMs: 50 },
      );
      recoverMs.push(Date.now() - killedAt);
    }
    // The last task runs to its end undisturbed.
    await waitFor(
      'the last training task to complete',
      async () => (await statusOf(tasks[tasks.length - 1] as number)) === 'completed',
      120_000,
      { everyMs: 200 },
    );

    // Every acknowledged update is in the journal, once; every round's aggregate is exactly
    // the FedAvg of the journal's updates.
    const journal = await journalOf(db);
    let lost = 0;
    let duplicated = 0;
    let unacknowledged = 0;
    const wrongAggregates: string[] = [];
    for (const e of ledger.entries.values()) {
      const rows = journal.filter((j) => j.task_id === e.taskId && j.round === e.round && j.rank === e.rank);
      if (!rows.some((j) => j.attempt === e.attempt)) lost++;
      if (rows.length > 1) duplicated += rows.length - 1;
      if (e.created > 1) duplicated += e.created - 1;
    }
    for (const taskId of tasks) {
      const t = (await api('GET', `/api/tasks/${taskId}`)).body;
      expect(t).toMatchObject({ status: 'completed', result: { rounds: ROUNDS } });
      const rounds = (await api('GET', `/api/tasks/${taskId}/rounds`)).body;
      const list = (Array.isArray(rounds) ? rounds : (rounds.items ?? rounds.rounds)) as Json[];
      for (let r = 1; r <= ROUNDS; r++) {
        const rows = journal.filter((j) => j.task_id === taskId && j.round === r);
        expect(rows.map((j) => j.rank).sort(), `task ${taskId} round ${r} journal`).toEqual([0, 1, 2]);
        for (const j of rows) {
          expect(j.num_samples).toBe(samplesOf(j.rank));
          if (!ledger.entries.has(`${taskId}:${r}:${j.rank}`)) unacknowledged++;
        }
        expect(list.find((x) => x.round === r)).toMatchObject({ state: 'closed', num_updates: WORLD });
        const path =
          r === ROUNDS ? `/api/tasks/${taskId}/model` : `/api/tasks/${taskId}/rounds/${r + 1}/model`;
        const res = await fetch(base + path, { headers: { authorization: `Bearer ${admin}` } });
        expect(res.status, path).toBe(200);
        const got = readF32(Buffer.from(await res.arrayBuffer()));
        const want = expectedAggregate(rows);
        const close = (xs: number[] | undefined, ys: number[]) =>
          xs?.length === ys.length &&
          ys.every((y, i) => Math.abs((xs[i] as number) - y) <= 1e-4 * Math.abs(y) + 1e-5);
        if (!close(got.a, want.a) || !close(got.b, want.b)) {
          wrongAggregates.push(
            `task ${taskId} round ${r}: got ${JSON.stringify(got.a)}, want ${JSON.stringify(want.a)}`,
          );
        }
        // The check can fail: one update fewer, or one twice, gives another aggregate.
        for (const j of rows) {
          const without = expectedAggregate(rows.filter((x) => x !== j)).a[0] as number;
          const twice = expectedAggregate([...rows, j]).a[0] as number;
          expect(Math.abs(without - (want.a[0] as number))).toBeGreaterThan(1e-2);
          expect(Math.abs(twice - (want.a[0] as number))).toBeGreaterThan(1e-2);
        }
      }
    }
    const refusals = [...ledger.refusals].map(([k, v]) => `${k} x${v}`).join(', ');
    figures.push({
      name: `server SIGKILL during training (${dialect})`,
      cycles,
      lost,
      duplicated,
      recoverMs,
      note:
        `${tasks.length} task(s) x ${ROUNDS} rounds x ${WORLD} ranks, ${ledger.entries.size} acknowledged updates, ` +
        `${unacknowledged} counted whose answer died with the server, wrong aggregates ${wrongAggregates.length}; ` +
        `upload answers other than 201/200: ${refusals || 'none'}`,
    });
    expect(wrongAggregates).toEqual([]);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(
      [...ledger.refusals.keys()].filter((k) => k.startsWith('unexpected') || k.startsWith('two attempts')),
    ).toEqual([]);
    expect(cycles).toBeGreaterThanOrEqual(CYCLES);
    await server.stop('SIGTERM');
  }, 600_000);
});

describe('chaos: database outage', () => {
  it('a private MariaDB killed for 10 s under load: 503 database_unavailable meanwhile, then every acknowledged task completes once', async () => {
    const mariadb = await startPrivateMariadb();
    cleanups.push(() => mariadb.close());
    const db = await createTestDatabase('sqlite'); // for its scratch folder only
    cleanups.push(() => db.drop());
    const farm = await startFarm(db, { CONNECTION_TIMEOUT: '10' }, `${mariadb.url}/aifarm_chaos`);
    const workers = [worker(farm, 'outage-a'), worker(farm, 'outage-b')];
    for (const w of workers) await clientIdOf(farm, w);

    const acknowledged: number[] = [];
    const violations: string[] = [];
    let unavailable = 0;
    let during = 0;
    let outage = false;
    let traffic = true;
    const check = (what: string, r: Awaited<ReturnType<typeof request>>, ok: number) => {
      if (outage) during++;
      if (r.status === ok) return true;
      if (
        r.status === 503 &&
        r.body?.error?.code === 'database_unavailable' &&
        Number(r.headers.get('retry-after')) > 0
      ) {
        unavailable++;
        return false;
      }
      violations.push(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
      return false;
    };
    // API clients: new tasks and listings, without pause, before, during and after the outage.
    const client = (async () => {
      for (let i = 0; traffic && i < 10_000; i++) {
        try {
          const r = await farm.api('POST', '/api/tasks', {
            type: 'command',
            requirements: {},
            // A second of work: workers are mid-task when the database goes, and report then.
            config: { command: `sleep 1; echo '{"result": {"done": 1}}'` },
          });
          if (check('POST /api/tasks', r, 201)) acknowledged.push(r.body.id as number);
          if (i % 3 === 0) check('GET /api/tasks', await farm.api('GET', '/api/tasks?limit=5'), 200);
        } catch (err) {
          violations.push(`no answer: ${String(err)}`);
        }
        await sleep(100 + random() * 100);
      }
    })();

    await waitFor('tasks to be created', () => acknowledged.length >= 5, 30_000);
    await sleep(1000 + random() * 2000);
    outage = true;
    await mariadb.stop('SIGKILL');
    await sleep(10_000);
    await mariadb.start();
    const restartedAt = Date.now();
    await waitFor('/ready', async () => (await farm.api('GET', '/ready')).status === 200, 60_000);
    const readyMs = Date.now() - restartedAt;
    outage = false;
    await sleep(2000);
    traffic = false;
    await client;
    expect(violations).toEqual([]);
    expect(unavailable).toBeGreaterThan(0);
    expect(farm.server.alive()).toBe(true);

    // Every task acknowledged with 201 completes, exactly once.
    await waitFor(
      'every acknowledged task to complete',
      async () => {
        for (const id of acknowledged) if ((await taskOf(farm, id)).status !== 'completed') return false;
        return true;
      },
      120_000,
      { everyMs: 500 },
    );
    const completedMs = Date.now() - restartedAt;
    let duplicated = 0;
    for (const id of acknowledged) {
      const rows = await assignmentsOf(farm.server.url, farm.admin, id);
      const completed = rows.filter((r) => r.status === 'completed').length;
      expect(completed, `task ${id}: ${JSON.stringify(rows)}`).toBe(1);
      duplicated += completed - 1;
    }
    const list = await farm.api('GET', '/api/tasks?limit=1');
    expect(list.body.total).toBe(acknowledged.length);
    figures.push({
      name: 'MariaDB killed for 10 s',
      cycles: 1,
      lost: 0,
      duplicated,
      recoverMs: [readyMs],
      note:
        `${acknowledged.length} tasks acknowledged, all completed once ${completedMs} ms after the restart; ` +
        `${unavailable} answers 503 database_unavailable (${during} requests during the outage), no other 5xx`,
    });
    for (const w of workers) expect(w.alive()).toBe(true);
  }, 300_000);
});
