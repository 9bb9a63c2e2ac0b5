import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { CliProcess } from './clients/processes.js';
import { ENDED, mnistTaskBody, workerArgs } from './helpers/training.js';
import { holdsStill, sleep, waitFor } from './helpers/wait.js';

// The worker side of training tasks (src/worker/executors/training-loop.ts, train-mnist.ts),
// end to end: a real server, real `ai-farm worker` processes, the built-in trainer.

let ts: TestServer;
let dir: string;
let token: string;
let procs: CliProcess[] = [];
let proxy: TcpProxy | undefined;

beforeAll(async () => {
  ts = await startTestServer('sqlite');
  dir = mkdtempSync(join(tmpdir(), 'aifarm-training-worker-'));
  const res = await ts.api('POST', '/api/tokens', { name: 'training-workers', role: 'worker' });
  expect(res.status).toBe(201);
  token = res.body.token;
});

afterEach(async () => {
  // A task a failed test left behind must not take the next test's workers.
  const open = (await ts.api('GET', '/api/tasks?limit=100')).body.items as { id: number; status: string }[];
  for (const t of open) {
    if (['pending', 'running', 'paused'].includes(t.status)) {
      await ts.api('PUT', `/api/tasks/${t.id}/status`, { status: 'cancelled' });
    }
  }
  await Promise.all(procs.map((p) => p.stop()));
  procs = [];
  await proxy?.close();
  proxy = undefined;
});

afterAll(async () => {
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Starts `ai-farm worker` with its own TMPDIR (to check the per-task temp dir is removed). */
async function startWorker(
  name: string,
  server = ts.url,
  workerToken = token,
  more: string[] = [],
): Promise<{ proc: CliProcess; tmp: string }> {
  const tmp = join(dir, `${name}-tmp`);
  mkdirSync(tmp, { recursive: true });
  const proc = new CliProcess(workerArgs(server, dir, name, more), {
    AI_FARM_TOKEN: workerToken,
    TMPDIR: tmp,
  });
  procs.push(proc);
  await proc.waitFor(/registered as/);
  return { proc, tmp };
}

async function createTask(
  name: string,
  config: Record<string, unknown>,
  worldSize = 2,
  server = ts,
): Promise<number> {
  const res = await server.api('POST', '/api/tasks', mnistTaskBody(name, worldSize, config));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

const getTask = async (id: number, server = ts) => (await server.api('GET', `/api/tasks/${id}`)).body;
/** Waits for the task to end; on a timeout, says where it stood and what the workers printed. */
async function finished(id: number, ms = 60_000, server = ts) {
  try {
    return await waitFor(
      `task ${id} to finish`,
      async () => {
        const t = await getTask(id, server);
        return ENDED.includes(t.status) && t;
      },
      ms,
    );
  } catch (err) {
    const rounds = (await server.api('GET', `/api/tasks/${id}/rounds`)).body;
    const assignments = (await server.api('GET', `/api/tasks/${id}/assignments`)).body;
    const outputs = procs.map((p) => p.output).join('\n----\n');
    throw new Error(
      `${(err as Error).message}\nrounds ${JSON.stringify(rounds)}\nassignments ${JSON.stringify(assignments)}\n${outputs}`,
    );
  }
}
const rankProgress = async (id: number): Promise<number[]> =>
  ((await ts.api('GET', `/api/tasks/${id}/assignments`)).body.items as { rank: number; progress: number }[])
    .sort((a, b) => a.rank - b.rank)
    .map((a) => a.progress);

describe('training workers', () => {
  it('a pause holds training mid-round; resume finishes every round; temp files are removed', async () => {
    const workers = [await startWorker('pause-a'), await startWorker('pause-b')];
    const id = await createTask('pause', { rounds: 2, epochs: 3 });
    // Round 1 is 0-50% of the task: pause inside it.
    await waitFor('training under way', async () => (await getTask(id)).progress >= 5, 30_000);
    expect((await ts.api('PUT', `/api/tasks/${id}/status`, { status: 'paused' })).status).toBe(200);
    await Promise.all(workers.map((w) => w.proc.waitFor(new RegExp(`task ${id}: paused`))));
    // Progress sent before the pause may still land (and is written to the database at most
    // once a second per lease): the ranks' progress must come to rest, inside round 1.
    const held = await holdsStill(() => rankProgress(id), 2500, 30_000, 'rank progress after the pause');
    expect(Math.max(...held)).toBeLessThan(50);

    expect((await ts.api('PUT', `/api/tasks/${id}/status`, { status: 'running' })).status).toBe(200);
    const done = await finished(id);
    expect(done.status, done.error_log).toBe('completed');
    const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items;
    expect(rounds.map((r: { num_updates: number }) => r.num_updates)).toEqual([2, 2]);
    // Progress reports carried their round.
    const metrics = (await ts.api('GET', `/api/tasks/${id}/metrics`)).body.items as {
      round: number | null;
    }[];
    expect(new Set(metrics.map((m) => m.round))).toEqual(new Set([1, 2]));
    for (const w of workers) {
      await w.proc.waitFor(new RegExp(`task ${id}: completed`));
      expect(readdirSync(w.tmp)).toEqual([]);
    }
  }, 90_000);

  it('--slowdown 3: the worker waits twice its training time before each upload, and says so', async () => {
    const { proc } = await startWorker('slow', ts.url, token, ['--slowdown', '3']);
    // Two short rounds: one rank on a tenth of the digits.
    const id = await createTask('slowdown', { rounds: 2, epochs: 1, shards: [[0, 0.1]] }, 1);
    const done = await finished(id, 90_000);
    expect(done.status, done.error_log).toBe('completed');
    const said = [
      ...proc.output.matchAll(
        /round (\d+): local training took ([\d.]+) s; --slowdown 3: waiting ([\d.]+) s more/g,
      ),
    ];
    expect(said.map((m) => Number(m[1]))).toEqual([1, 2]);
    const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items as {
      round: number;
      opened_at: string;
      closed_at: string;
    }[];
    for (const m of said) {
      const took = Number(m[2]);
      expect(Number(m[3])).toBeCloseTo(2 * took, 2);
      // The update came after the training and the wait: the round was open at least 3x the training.
      const r = rounds.find((x) => x.round === Number(m[1]))!;
      expect(Date.parse(r.closed_at) - Date.parse(r.opened_at)).toBeGreaterThanOrEqual(3 * took * 1000 - 5);
    }
  }, 120_000);

  it('a network cut mid-round: the worker reconnects, retries, and the task completes', async () => {
    proxy = await startTcpProxy('127.0.0.1', Number(new URL(ts.url).port));
    const via = `http://127.0.0.1:${proxy.port}`;
    const workers = [await startWorker('cut-a', via), await startWorker('cut-b', via)];
    const id = await createTask('cut', { rounds: 3, epochs: 1 });
    // Round 2 is 33-67% of the task: cut early in it, long enough for the ranks to finish
    // training meanwhile, so their uploads meet the cut and the reconnection.
    await waitFor('round 2 under way', async () => (await getTask(id)).progress >= 36, 60_000);
    await proxy.cut();
    await sleep(4000);
    await proxy.restore();
    const done = await finished(id);
    expect(done.status, done.error_log).toBe('completed');
    const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items;
    expect(rounds.map((r: { num_updates: number }) => r.num_updates)).toEqual([2, 2, 2]);
    // Whether an upload met the cut depends on how fast this machine trains; what must hold
    // either way is above: every round got both updates and the task completed.
    void workers;
  }, 90_000);

  it('a worker killed mid-round: its rank goes to the spare worker, which finishes the task', async () => {
    // Its own server with a short timeout, so that the killed worker's rank is re-placed quickly.
    const fast = await startTestServer('sqlite', { CONNECTION_TIMEOUT: 3 });
    try {
      const tok = (await fast.api('POST', '/api/tokens', { name: 'kill-workers', role: 'worker' })).body
        .token;
      const workers = [];
      for (const name of ['kill-a', 'kill-b', 'kill-c']) workers.push(await startWorker(name, fast.url, tok));
      const ids = await Promise.all(
        workers.map(async (w) => (await w.proc.waitFor(/registered as (\S+)/))[1]),
      );
      const id = await createTask('kill', { rounds: 3, epochs: 2 }, 2, fast);
      // Round 2 (33-67%) under way on two of the three workers.
      await waitFor('round 2 under way', async () => (await getTask(id, fast)).progress >= 40, 60_000);
      const assignments = (await fast.api('GET', `/api/tasks/${id}/assignments`)).body.items as {
        client_id: string;
      }[];
      const busy = workers.filter((_, i) => assignments.some((a) => a.client_id === ids[i]));
      expect(busy.length).toBe(2);
      busy[0]!.proc.child.kill('SIGKILL');
      const spare = workers.find((w) => !busy.includes(w))!;
      await spare.proc.waitFor(new RegExp(`task ${id} kill \\(train_mnist, attempt 2\\): started`), 30_000);
      const done = await finished(id, 60_000, fast);
      expect(done.status, done.error_log).toBe('completed');
      const rounds = (await fast.api('GET', `/api/tasks/${id}/rounds`)).body.items;
      expect(rounds.map((r: { num_updates: number }) => r.num_updates)).toEqual([2, 2, 2]);
      await spare.proc.waitFor(new RegExp(`task ${id}: completed`));
      expect(readdirSync(spare.tmp)).toEqual([]);
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
      procs = [];
      await fast.stop();
    }
    // Its waits add up to 150 s on a loaded machine (training runs at a fraction of its speed).
  }, 240_000);

  it('cancel stops training at once and frees the worker', async () => {
    const workers = [await startWorker('stop-a'), await startWorker('stop-b')];
    const id = await createTask('stop', { rounds: 3, epochs: 20 });
    await waitFor('training under way', async () => (await getTask(id)).progress >= 2, 30_000);
    expect((await ts.api('PUT', `/api/tasks/${id}/status`, { status: 'cancelled' })).status).toBe(200);
    for (const w of workers) {
      // Within one epoch of 20 (the round would take minutes): generous for a loaded machine.
      await w.proc.waitFor(new RegExp(`task ${id}: stopped by the server`), 30_000);
      await waitFor('temp dir removed', () => readdirSync(w.tmp).length === 0, 15_000);
    }
    // Both are free again: a one-rank task runs at once.
    const next = await createTask('after-stop', { rounds: 1, epochs: 1 }, 1);
    expect((await finished(next)).status).toBe('completed');
  }, 180_000);

  it('clients sampled per round: a worker stopped when not sampled trains again when sampled later', async () => {
    // Ids in a known order (the sample is seeded by the config's seed and the round): with seed 2
    // rounds 1-3 sample {a, b}, {b, c}, {a, c}: a gives its rank up in round 2 and takes one again
    // in round 3 (src/scheduling/sampling.ts).
    const suffix = Math.random().toString(36).slice(2, 8);
    const names = ['sa', 'sb', 'sc'];
    for (const n of names) writeFileSync(join(dir, `${n}.id`), `${n}-${suffix}\n`);
    for (const n of names) await startWorker(n);
    const id = await createTask('sampled', {
      rounds: 3,
      epochs: 1,
      seed: 2,
      clients_per_round: 2,
      shards: [
        [0, 0.1],
        [0.1, 0.2],
      ],
    });
    expect((await finished(id, 120_000)).status).toBe('completed');
    const events = (await ts.api('GET', `/api/tasks/${id}/events`)).body.items as {
      kind: string;
      data: { round: number; sampled: { client_id: string }[] };
    }[];
    const sampled = events
      .filter((e) => e.kind === 'round_sampled')
      .sort((x, y) => x.data.round - y.data.round)
      .map((e) =>
        e.data.sampled
          .map((c) => c.client_id.slice(0, 2))
          .sort()
          .join(','),
      );
    expect(sampled).toEqual(['sa,sb', 'sb,sc', 'sa,sc']);
    const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items as { num_updates: number }[];
    expect(rounds.map((r) => r.num_updates)).toEqual([2, 2, 2]);
  }, 180_000);
});
