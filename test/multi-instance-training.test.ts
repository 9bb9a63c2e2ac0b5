import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { CliProcess } from './clients/processes.js';
import { serverEnv, startCliServer, type CliServer } from './helpers/cli.js';
import { createTestDatabase, type TestDatabase } from './helpers/db.js';
import { request } from './helpers/server.js';
import { ENDED, mnistTaskBody, workerArgs } from './helpers/training.js';
import { waitFor } from './helpers/wait.js';
import { sampleRound } from '../src/training/sampling-config.js';

const REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

type Task = {
  id: number;
  status: string;
  progress: number;
  error_log: string | null;
  unschedulable_reason: string | null;
};

/**
 * A training task whose ranks span instances (issue 14, point 4): two `ai-farm server`
 * processes on one MariaDB database and one Redis, one real `ai-farm worker` connected to each.
 * Neither instance alone has the two clients a 2-rank task needs; the farm has.
 */
describe('a training task across two instances', () => {
  let db: TestDatabase;
  let dir: string;
  const admin = generateToken();
  const servers: CliServer[] = [];
  const workers: CliProcess[] = [];
  const clientIds: string[] = [];
  let token = '';

  /** Starts a real `ai-farm worker` connected to `server`; returns its client id. */
  async function startWorker(name: string, server: CliServer): Promise<string> {
    const proc = new CliProcess(workerArgs(server.url, dir, name), { AI_FARM_TOKEN: token, TMPDIR: dir });
    workers.push(proc);
    return (await proc.waitFor(/registered as (\S+)/, 60_000))[1] as string;
  }

  const api = (server: CliServer, method: string, path: string, body?: unknown) =>
    request(server.url, method, path, body, admin);
  const task = async (id: number, via = servers[0] as CliServer): Promise<Task> =>
    (await api(via, 'GET', `/api/tasks/${id}`)).body as Task;
  /** The ids of the clients connected to any instance (as the first one reads the farm). */
  const connectedIds = async (): Promise<string[]> => {
    const items = (await api(servers[0] as CliServer, 'GET', '/api/clients?limit=100')).body.items as {
      id: string;
      connected: boolean;
    }[];
    return items.filter((c) => c.connected).map((c) => c.id);
  };

  beforeAll(async () => {
    db = await createTestDatabase('mysql');
    dir = mkdtempSync(join(tmpdir(), 'aifarm-span-'));
    for (const name of ['a', 'b']) {
      const env = serverEnv(db, admin, {
        DATA_DIR: join(db.dir, `data-${name}`),
        LOG_DIR: join(db.dir, `logs-${name}`),
        REDIS_URL,
        REDIS_KEY_PREFIX: `aifarm-test-${db.url.split('/').pop()}:`,
        CONNECTION_TIMEOUT: '5',
      });
      servers.push(await startCliServer([], env, { timeoutMs: 60_000 }));
    }
    const tok = await api(servers[0] as CliServer, 'POST', '/api/tokens', { name: 'span', role: 'worker' });
    expect(tok.status).toBe(201);
    token = tok.body.token as string;
    // One worker on each instance, each reaching it directly (no balancer to choose).
    for (const [i, server] of servers.entries()) clientIds.push(await startWorker(`span-${i}`, server));
    // Each instance has recorded the socket it holds.
    await waitFor(
      'both clients held',
      async () => {
        const connected = await connectedIds();
        return clientIds.every((id) => connected.includes(id));
      },
      30_000,
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    for (const s of servers) await s.stop('SIGKILL');
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A tenth of MNIST per rank: rounds short enough for a test. */
  const TWO_SHARDS = [
    [0, 0.1],
    [0.1, 0.2],
  ];
  const create = async (name: string, worldSize: number, config: Record<string, unknown>) => {
    const res = await api(
      servers[0] as CliServer,
      'POST',
      '/api/tasks',
      mnistTaskBody(name, worldSize, config),
    );
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id as number;
  };

  /** Waits for the task to end (read through instance B) and expects it completed. */
  const completes = async (id: number) => {
    const done = await waitFor(
      'the task to finish',
      async () => {
        const t = await task(id, servers[1]);
        return ENDED.includes(t.status) && t;
      },
      120_000,
      {
        state: async () =>
          `${JSON.stringify(await task(id))}\n${workers.map((w) => w.output).join('\n----\n')}`,
      },
    );
    expect(done.status, done.error_log ?? '').toBe('completed');
  };
  const updatesPerRound = async (id: number) =>
    (
      (await api(servers[1] as CliServer, 'GET', `/api/tasks/${id}/rounds`)).body.items as {
        num_updates: number;
      }[]
    ).map((r) => r.num_updates);

  it('unschedulable_reason counts the clients of every instance', async () => {
    const id = await create('span-too-wide', 3, { rounds: 1, epochs: 1 });
    // Either instance may write the note; both must count the whole farm: 2 of the 3 clients.
    const t = await waitFor(
      'the note',
      async () => {
        const t = await task(id);
        return t.unschedulable_reason?.includes('2 known client(s) qualify') && t;
      },
      30_000,
      { state: async () => JSON.stringify(await task(id)) },
    );
    expect(t.status).toBe('pending');
    expect(t.unschedulable_reason).toMatch(/^needs 3 clients with/);
    expect(
      (await api(servers[0] as CliServer, 'PUT', `/api/tasks/${id}/status`, { status: 'cancelled' })).status,
    ).toBe(200);
  }, 60_000);

  it('a 2-rank train_mnist task with one worker on each instance runs to completion', async () => {
    const id = await create('span', 2, { rounds: 2, epochs: 1, shards: TWO_SHARDS });
    await completes(id);
    expect(await updatesPerRound(id)).toEqual([2, 2]);
    // One rank on each worker, so one through each instance.
    const assignments = (await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/assignments`)).body
      .items as { client_id: string; rank: number; status: string }[];
    expect(new Set(assignments.map((a) => a.client_id))).toEqual(new Set(clientIds));
    // The remote rank's assignment is settled through its own instance, just after the task.
    await waitFor(
      'every assignment completed',
      async () =>
        (
          (await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/assignments`)).body.items as {
            status: string;
          }[]
        ).every((a) => a.status === 'completed'),
      30_000,
    );
    for (const w of workers) await w.waitFor(new RegExp(`task ${id}: completed`), 30_000);
  }, 180_000);

  it('an asynchronous 2-rank task with one worker on each instance runs to completion', async () => {
    const id = await create('span-async', 2, {
      rounds: 3,
      epochs: 1,
      shards: TWO_SHARDS,
      mode: 'async',
      buffer_size: 1,
    });
    await completes(id);
    // Exactly buffer_size per version, whichever instance journals them: an update that finds
    // its buffer full or closing goes into the next one (it once joined the closing one: [2, 1, 1]).
    expect(await updatesPerRound(id)).toEqual([1, 1, 1]);
    const assignments = (await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/assignments`)).body
      .items as { client_id: string }[];
    expect(new Set(assignments.map((a) => a.client_id))).toEqual(new Set(clientIds));
    for (const w of workers) await w.waitFor(new RegExp(`task ${id}: completed`), 30_000);
  }, 180_000);

  it('a sampled task samples the clients of both instances and hands ranks over between them', async () => {
    // A third worker, on instance A: each round samples 2 of the 3 (min_available 3 makes even
    // round 1 wait for the whole farm). The samples are seeded, so the test picks a seed whose
    // rounds move instance B's client in or out (a task frame or a stop through cluster.push).
    clientIds.push(await startWorker('span-2', servers[0] as CliServer));
    const b = clientIds[1] as string;
    const settings = {
      clients_per_round: 2,
      min_available: 3,
      sampling: 'uniform' as const,
      speed_floor: 0.1,
    };
    const predict = (seed: number) =>
      [1, 2, 3].map(
        (r) =>
          new Set(
            sampleRound(
              settings,
              seed,
              r,
              clientIds.map((id) => ({ id })),
              2,
            )!.map((p) => p.clientId),
          ),
      );
    const seed = Array.from({ length: 50 }, (_, i) => i + 1).find((s) => {
      const rounds = predict(s);
      return rounds.some((r, i) => i > 0 && r.has(b) !== rounds[i - 1]!.has(b));
    })!;
    expect(seed).toBeGreaterThan(0);
    const id = await create('span-sampled', 2, {
      rounds: 3,
      epochs: 1,
      seed,
      clients_per_round: 2,
      min_available: 3,
      shards: TWO_SHARDS,
    });
    await completes(id);
    expect(await updatesPerRound(id)).toEqual([2, 2, 2]);
    const events = (await api(servers[1] as CliServer, 'GET', `/api/tasks/${id}/events`)).body.items as {
      kind: string;
      data: { round: number; eligible: number; sampled: { client_id: string }[] };
    }[];
    const sampled = events
      .filter((e) => e.kind === 'round_sampled')
      .sort((x, y) => x.data.round - y.data.round);
    expect(sampled.map((e) => e.data.eligible)).toEqual([3, 3, 3]);
    expect(sampled.map((e) => new Set(e.data.sampled.map((c) => c.client_id)))).toEqual(predict(seed));
    // The third worker leaves (a goodbye: disconnected at once), so the next test finds the farm
    // of one worker per instance it expects.
    const third = workers.pop()!;
    third.child.kill('SIGTERM');
    clientIds.pop();
    await waitFor(
      'the third worker disconnected',
      async () => (await connectedIds()).every((id) => clientIds.includes(id)),
      60_000,
    );
  }, 180_000);

  it('a rank lost with its worker on one instance is placed again on a worker of the other', async () => {
    const id = await create('span-lost', 2, { rounds: 3, epochs: 2, shards: TWO_SHARDS });
    // Round 2 open (round 3 if a poll missed it): both workers, one through each instance, train
    // it. A's worker is frozen at once (SIGSTOP), so the task cannot finish without the rank it
    // holds, however fast the machine: the open round needs its update. (Killing it only after
    // the spare below had started let an idle machine finish all three rounds first: the kill
    // then found no rank to lose, and the spare waited for an attempt 2 that never came.)
    await waitFor(
      'round 2 open',
      async () => {
        const r = await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/rounds/current`);
        return r.status === 200 && r.body.round >= 2 && r.body.state === 'open';
      },
      90_000,
      { state: async () => JSON.stringify(await task(id)) },
    );
    workers[0]!.child.kill('SIGSTOP');
    // A spare worker on B; then A's worker dies. Silent since the SIGSTOP, A's worker loses its
    // rank after CONNECTION_TIMEOUT, before or after the spare registers: either way the rank
    // goes to B's spare (the only free client), not to B's rank holder.
    const spare = await startWorker('span-spare', servers[1] as CliServer);
    const spareWorker = workers.at(-1)!;
    workers[0]!.child.kill('SIGKILL');
    await spareWorker
      .waitFor(new RegExp(`task ${id} span-lost \\(train_mnist, attempt 2\\): started`), 60_000)
      .catch(async (err: Error) => {
        const about = async (what: string) =>
          JSON.stringify((await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/${what}`)).body);
        throw new Error(
          `${err.message}\nassignments: ${await about('assignments')}\nevents: ${await about('events')}`,
        );
      });
    await completes(id);
    expect(await updatesPerRound(id)).toEqual([2, 2, 2]);
    const assignments = (await api(servers[0] as CliServer, 'GET', `/api/tasks/${id}/assignments`)).body
      .items as { client_id: string; status: string }[];
    expect(assignments.find((a) => a.client_id === clientIds[0])?.status).toBe('lost');
    expect(
      assignments
        .filter((a) => a.status === 'completed')
        .map((a) => a.client_id)
        .sort(),
    ).toEqual([clientIds[1], spare].sort());
  }, 240_000);
});
