import { join } from 'node:path';
import { createConnection, type Connection } from 'mysql2/promise';
import { afterEach, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { startCliServer, type CliServer } from './helpers/cli.js';
import { createTestDatabase, type TestDatabase } from './helpers/db.js';
import { request } from './helpers/server.js';
import { startTcpBalancer, type TcpBalancer } from './helpers/tcp-balancer.js';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, upload } from './helpers/training.js';
import { freePort } from './helpers/ports.js';
import { SimWorker, type Msg } from './helpers/sim-worker.js';
import { sleep, waitFor } from './helpers/wait.js';

const REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const WORKERS = 100;
const TASKS = 1000;
const RANKS = 4;
const ROUNDS = 3;

/**
 * Two `ai-farm server` processes on one MariaDB database and one Redis, behind a round-robin
 * TCP balancer for both the HTTP and the WebSocket ports. 100 workers, 1,000 tasks and a
 * four-rank training task; a pause sent through A reaches the ranks on B; B is killed with
 * SIGKILL mid-run; everything completes, no task is assigned or completed twice, and every
 * round's aggregate is the weighted mean of exactly the acknowledged updates.
 */
describe('several server instances behind a load balancer', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });

  it('share the work, survive kill -9 of one instance, and never assign a task twice', async () => {
    const db: TestDatabase = await createTestDatabase('mysql');
    cleanups.push(() => db.drop());
    const admin = generateToken();
    const wsPorts = [await freePort(), await freePort()];
    const env = (name: string, wsPort: number) => ({
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      WEBSOCKET_PORT: String(wsPort),
      DATABASE_URL: db.url,
      DATA_DIR: join(db.dir, `data-${name}`),
      LOG_DIR: join(db.dir, `logs-${name}`),
      // Shared storage: an upload may reach either instance.
      MODEL_CACHE_DIR: join(db.dir, 'models'),
      CHECKPOINT_DIR: join(db.dir, 'checkpoints'),
      RATE_LIMIT: 'off',
      ADMIN_TOKEN: admin,
      REDIS_URL,
      REDIS_KEY_PREFIX: `aifarm-test-${db.url.split('/').pop()}:`,
      CONNECTION_TIMEOUT: '5',
      // Every worker shares one token and, through the balancer, one address; after the kill
      // all of them are on A. The caps stay below MAX_CLIENTS, so both are raised together.
      MAX_CLIENTS: String(2 * WORKERS),
      MAX_CONNECTIONS_PER_TOKEN: String(2 * WORKERS),
      MAX_CONNECTIONS_PER_ADDRESS: String(2 * WORKERS),
    });
    const a: CliServer = await startCliServer([], env('a', wsPorts[0] as number), { timeoutMs: 60_000 });
    cleanups.push(() => a.stop('SIGKILL'));
    const b: CliServer = await startCliServer([], env('b', wsPorts[1] as number), { timeoutMs: 60_000 });
    cleanups.push(() => b.stop('SIGKILL'));
    const port = (url: string) => Number(new URL(url).port);
    const httpLb: TcpBalancer = await startTcpBalancer([
      { host: '127.0.0.1', port: port(a.url) },
      { host: '127.0.0.1', port: port(b.url) },
    ]);
    cleanups.push(() => httpLb.close());
    const wsLb: TcpBalancer = await startTcpBalancer(wsPorts.map((p) => ({ host: '127.0.0.1', port: p })));
    cleanups.push(() => wsLb.close());
    const lb = `http://127.0.0.1:${httpLb.port}`;
    const sql: Connection = await createConnection(db.url);
    cleanups.push(() => sql.end());
    const query = async <T = Msg>(q: string, args: unknown[] = []): Promise<T[]> =>
      (await sql.query(q, args))[0] as T[];

    const tok = await request(lb, 'POST', '/api/tokens', { name: 'workers', role: 'worker' }, admin);
    expect(tok.status).toBe(201);
    const token = tok.body.token as string;

    // Connections alternate A, B, A, B...: the four GPU workers (the training's ranks) are B's.
    const workers: SimWorker[] = [];
    cleanups.push(async () => workers.forEach((w) => w.close()));
    for (let i = 0; i < WORKERS; i++) {
      const gpu = i < 2 * RANKS && i % 2 === 1;
      const w = new SimWorker(
        `mw${i}-${Math.random().toString(36).slice(2, 7)}`,
        `ws://127.0.0.1:${wsLb.port}/`,
        token,
        gpu,
      );
      workers.push(w);
      await w.connect();
    }
    expect(wsLb.counts).toEqual([WORKERS / 2, WORKERS / 2]);
    const onB = new Set(workers.filter((_, i) => wsLb.picks[i] === 1).map((w) => w.id));
    const ranks = workers.filter((_, i) => i < 2 * RANKS && i % 2 === 1);
    // Each instance records the sockets it holds (a moment after `registered`).
    await waitFor(
      'clients.instance_id',
      async () => {
        const rows = await query<{ n: number }>(
          'SELECT COUNT(*) AS n FROM clients WHERE instance_id IS NOT NULL GROUP BY instance_id',
        );
        return rows.length === 2 && rows.every((r) => Number(r.n) === WORKERS / 2);
      },
      120_000,
    );

    // The training task's ranks: synthetic models uploaded through the balancer.
    let trainingId = 0;
    const acknowledged = new Map<number, Map<number, { x: number; n: number }>>();
    let resumed = false;
    let killed = false;
    const uploading = new Set<string>();
    const uploadFailures = new Map<string, number>();
    const put = async (rank: number, attempt: number, round: number, clientId: string) => {
      const key = `${round}:${rank}:${attempt}`;
      if (uploading.has(key)) return;
      uploading.add(key);
      const x = round * 10 + rank + 1;
      const n = (rank + 1) * 100;
      // Bounded by time, not tries: on a loaded machine an instance may answer 409 (the client
      // is still moving) or fail for longer than a few quick retries.
      const giveUpAt = Date.now() + 90_000;
      while (Date.now() < giveUpAt) {
        const r = await upload({
          base: lb,
          token,
          clientId,
          taskId: trainingId,
          round,
          rank,
          attempt,
          numSamples: n,
          body: model([x, x, x, x], [x, 0, 0, -x]),
        }).catch(() => ({ status: 0, body: null }));
        if (r.status === 201 || r.status === 200) {
          const m = acknowledged.get(round) ?? new Map<number, { x: number; n: number }>();
          m.set(rank, { x, n });
          acknowledged.set(round, m);
          break;
        }
        // Not connected yet (moving to another instance) or the instance just died: retry.
        const code = (r.body?.error?.code ?? '') as string;
        if (r.status === 409 && code === 'round_closed') break;
        const why = `${r.status} ${code}`.trim();
        uploadFailures.set(why, (uploadFailures.get(why) ?? 0) + 1);
        await sleep(250);
      }
      uploading.delete(key);
    };
    const onTraining = (w: SimWorker, m: Msg) => {
      const t = (m.type === 'task' ? m.data.training : m) as Msg;
      const rank = (m.type === 'task' ? m.data.rank : m.rank) as number;
      const attempt = (m.type === 'task' ? m.data.attempt : m.attempt) as number;
      if (m.type === 'training_complete') return;
      if (t.accepted) return;
      const round = t.round as number;
      // Round 1 waits for the pause test; half of round 2 waits for B's death.
      const go = async () => {
        await waitFor('resume', () => resumed, 120_000);
        if (round === 2 && rank >= RANKS / 2) await waitFor('kill', () => killed, 120_000);
        await put(rank, attempt, round, w.id);
      };
      void go().catch(() => undefined);
    };
    for (const w of ranks) w.onTraining = onTraining;
    // The training task: four ranks. The ranks are listening first: their `task` frames may
    // arrive before the answer to this POST does.
    const created = await request(
      lb,
      'POST',
      '/api/tasks',
      {
        type: 'command',
        requirements: { gpu_count: 1 },
        world_size: RANKS,
        config: { rounds: ROUNDS, round_deadline_s: 600 },
      },
      admin,
    );
    expect(created.status).toBe(201);
    trainingId = created.body.id as number;
    await waitFor('the ranks', () => ranks.every((w) => w.frames.some((f) => f.task === trainingId)), 60_000);
    // Each rank's task carries its round, whichever instance placed it and whichever aggregates.
    expect(ranks.flatMap((w) => w.untrained)).toEqual([]);

    // A pause sent through instance A reaches the ranks, whose sockets B holds; so does resume.
    const pause = await request(a.url, 'PUT', `/api/tasks/${trainingId}/status`, { status: 'paused' }, admin);
    expect(pause.status).toBe(200);
    await waitFor('pause on B', () => ranks.every((w) => w.controls.includes(`pause:${trainingId}`)), 30_000);
    const resume = await request(
      a.url,
      'PUT',
      `/api/tasks/${trainingId}/status`,
      { status: 'running' },
      admin,
    );
    expect(resume.status).toBe(200);
    await waitFor(
      'resume on B',
      () => ranks.every((w) => w.controls.includes(`resume:${trainingId}`)),
      30_000,
    );
    resumed = true;

    // 1,000 tasks created through the balancer while B dies with a third of them done and round
    // 2 half in. A create cut by the kill is looked up by its name before it is sent again.
    const t0 = Date.now();
    const ids: number[] = [];
    const createOne = async (i: number): Promise<number> => {
      const name = `mi-${i}`;
      for (let k = 0; k < 20; k++) {
        const r = await request(
          lb,
          'POST',
          '/api/tasks',
          { type: 'command', name, requirements: {} },
          admin,
        ).catch(() => null);
        if (r?.status === 201) return r.body.id as number;
        const found = await query<{ id: number }>('SELECT id FROM tasks WHERE name = ?', [name]);
        if (found[0]) return Number(found[0].id);
        await sleep(200);
      }
      throw new Error(`task ${name} could not be created`);
    };
    let createdAt = 0;
    const creating = (async () => {
      for (let i = 0; i < TASKS; i += 25) {
        ids.push(
          ...(await Promise.all(Array.from({ length: Math.min(25, TASKS - i) }, (_, k) => createOne(i + k)))),
        );
      }
      createdAt = Date.now();
    })();
    cleanups.push(() => creating);
    const overlaps: Msg[] = [];
    const sample = async () => {
      const rows = await query(
        `SELECT task_id, \`rank\`, COUNT(*) AS n FROM task_assignments
         WHERE status IN ('assigned','training','paused') GROUP BY task_id, \`rank\` HAVING COUNT(*) > 1`,
      );
      overlaps.push(...rows);
    };
    const completed = async () =>
      Number(
        (
          await query("SELECT COUNT(*) AS n FROM tasks WHERE status = 'completed' AND id <> ?", [trainingId])
        )[0]?.n,
      );
    const progress = async () =>
      `${await completed()} of ${TASKS} tasks completed; training frames without a round: ${
        ranks.filter((w) => w.untrained.length > 0).length
      } ranks; acknowledged updates by round: ${JSON.stringify(
        [...acknowledged].map(([round, m]) => [round, m.size]),
      )}; upload answers other than 201/200: ${JSON.stringify([...uploadFailures])}`;
    await waitFor(
      'a third of the tasks',
      async () => {
        await sample();
        return (await completed()) >= TASKS / 3 && (acknowledged.get(2)?.size ?? 0) >= RANKS / 2;
      },
      120_000,
      { state: progress },
    );
    const killedAt = Date.now();
    const doneBeforeKill = await completed();
    await b.stop('SIGKILL');
    killed = true;

    let movedAt = 0;
    const moving = waitFor(
      'B’s workers on A',
      async () => {
        await sample();
        const rows = await query<{ id: string; instance_id: string }>('SELECT id, instance_id FROM clients');
        const aId = rows.find((r) => !onB.has(r.id))?.instance_id;
        return rows.every((r) => r.instance_id === aId) && workers.every((w) => w.connections >= 1);
      },
      120_000,
    ).then(() => (movedAt = Date.now()));
    moving.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
    await creating;
    expect(new Set(ids).size).toBe(TASKS);
    await moving;
    await waitFor(
      'every task',
      async () => {
        await sample();
        return (await completed()) === TASKS;
      },
      240_000,
    );
    const doneAt = Date.now();
    await waitFor(
      'the training',
      async () =>
        (await query('SELECT status FROM tasks WHERE id = ?', [trainingId]))[0]?.status === 'completed',
      180_000,
    );
    const trainedAt = Date.now();

    // No task assigned twice at once, none completed twice.
    await sample();
    expect(overlaps).toEqual([]);
    const twice = await query(
      `SELECT task_id, \`rank\`, COUNT(*) AS n FROM task_assignments WHERE status = 'completed'
       GROUP BY task_id, \`rank\` HAVING COUNT(*) > 1`,
    );
    expect(twice).toEqual([]);
    const live = await query(
      `SELECT * FROM task_assignments WHERE status IN ('assigned','training','paused')`,
    );
    expect(live).toEqual([]);
    const lost = await query<{ task_id: number; client_id: string; attempt: number }>(
      `SELECT task_id, client_id, attempt FROM task_assignments WHERE status = 'lost'`,
    );
    // Every worker got each task frame once; one that moved from B to A may have had its live
    // tasks sent again there (same attempt), and a lost attempt's task went to someone else.
    for (const w of workers) {
      const seen = new Map<string, number>();
      for (const f of w.frames)
        seen.set(`${f.task}:${f.attempt}`, (seen.get(`${f.task}:${f.attempt}`) ?? 0) + 1);
      for (const [key, n] of seen) {
        if (n === 1) continue;
        expect(onB.has(w.id), `${w.id} got ${key} ${n} times`).toBe(true);
        expect(n).toBeLessThanOrEqual(w.connections);
      }
    }
    const byTask = new Map<number, Set<string>>();
    for (const w of workers)
      for (const f of w.frames)
        if (f.task !== trainingId)
          byTask.set(f.task, (byTask.get(f.task) ?? new Set()).add(`${w.id}:${f.attempt}`));
    for (const id of ids) {
      const holders = byTask.get(id) ?? new Set();
      const lostHere = lost.filter((l) => l.task_id === id).length;
      expect(holders.size, `task ${id}`).toBe(1 + lostHere);
    }

    // Each round's model is the weighted mean of exactly the acknowledged updates.
    const mean = (round: number) => {
      const ups = [...(acknowledged.get(round)?.values() ?? [])];
      expect(ups).toHaveLength(RANKS);
      return ups.reduce((s, u) => s + u.x * u.n, 0) / ups.reduce((s, u) => s + u.n, 0);
    };
    for (let r = 1; r < ROUNDS; r++) {
      const g = await download(lb, `/api/tasks/${trainingId}/rounds/${r + 1}/model`, token);
      expect(g.status).toBe(200);
      const m = mean(r);
      expectClose((await values(g.bytes)).a, [m, m, m, m]);
    }
    const final = await download(lb, `/api/tasks/${trainingId}/model`, token);
    expect(final.status).toBe(200);
    const m = mean(ROUNDS);
    expectClose((await values(final.bytes)).b, [m, 0, 0, -m]);
    const rounds = await query<{ round: number; num_updates: number }>(
      'SELECT round, num_updates FROM training_rounds WHERE task_id = ? ORDER BY round',
      [trainingId],
    );
    expect(rounds.map((r) => Number(r.num_updates))).toEqual(Array.from({ length: ROUNDS }, () => RANKS));

    const seconds = (ms: number) => (ms / 1000).toFixed(1);
    console.log(
      [
        `multi-instance: ${TASKS} tasks, ${WORKERS} workers, 2 instances on MariaDB + Redis`,
        `  tasks/s end to end, created one POST each through the balancer (kill -9 of B included): ${(TASKS / ((doneAt - t0) / 1000)).toFixed(0)} (creation alone: ${(TASKS / ((createdAt - t0) / 1000)).toFixed(0)}/s)`,
        `  re-placed leases (lost, then assigned again): ${lost.length}`,
        `  workers moved from B to A: ${onB.size}; tasks completed when B died: ${doneBeforeKill}`,
        `  time to recover: every worker of B on A ${seconds(movedAt - killedAt)} s after kill -9; all tasks ${seconds(doneAt - killedAt)} s; training finished ${seconds(trainedAt - killedAt)} s`,
      ].join('\n'),
    );
  }, 600_000);
});
