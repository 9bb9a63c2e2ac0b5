import { request as httpRequest } from 'node:http';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { serverEnv, startCliServer } from './helpers/cli.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/db.js';
import { request } from './helpers/server.js';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, taskMessage, upload } from './helpers/training.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * A server killed with SIGKILL mid-round (`ai-farm server` as a child process) and started
 * again on the same database and folders finishes the task with every acknowledged update
 * counted exactly once: the aggregate equals the mean of exactly the acknowledged updates.
 */
describe.each(DIALECTS)('training survives kill -9 (%s)', (dialect) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });

  /** `ai-farm server` on a fresh database and folders, with clients `ids` connected; kill and restart. */
  async function killableFarm(ids: string[], extraEnv: Record<string, string> = {}) {
    const db: TestDatabase = await createTestDatabase(dialect);
    cleanups.push(() => db.drop());
    const admin = generateToken();
    const env = serverEnv(db, admin, extraEnv);
    const farm = {
      db,
      env,
      admin,
      ids,
      token: '',
      server: await startCliServer([], env),
      clients: [] as RawClient[],
      async connect() {
        farm.clients = [];
        for (const id of ids) {
          farm.clients.push(
            await registeredClient(`${farm.server.url.replace('http', 'ws')}/ws`, farm.token, id, {
              max_tasks: 1,
            }),
          );
        }
      },
      /** SIGKILL, and the clients' sockets closed. */
      async kill() {
        await farm.server.stop('SIGKILL');
        farm.clients.forEach((c) => c.close());
      },
      /** A `command` training task of `worldSize` ranks and `rounds` rounds (more `config`); its id. */
      async createTraining(worldSize: number, rounds: number, config: object = {}): Promise<number> {
        const body = {
          type: 'command',
          requirements: {},
          world_size: worldSize,
          config: { rounds, ...config },
        };
        const created = await request(farm.server.url, 'POST', '/api/tasks', body, admin);
        expect(created.status).toBe(201);
        return created.body.id as number;
      },
      /** Client `i` uploads the model ([x, x, x, x], [x, 0, 0, -x]) for its lease's rank and round. */
      put(
        taskId: number,
        i: number,
        lease: { rank: number; attempt: number },
        round: number,
        x: number,
        numSamples: number,
      ) {
        return upload({
          base: farm.server.url,
          token: farm.token,
          clientId: ids[i]!,
          taskId,
          round,
          rank: lease.rank,
          attempt: lease.attempt,
          numSamples,
          body: model([x, x, x, x], [x, 0, 0, -x]),
        });
      },
      async restart() {
        farm.server = await startCliServer([], env);
        await farm.connect();
      },
    };
    cleanups.push(() => farm.server.stop('SIGKILL'));
    cleanups.push(async () => farm.clients.forEach((c) => c.close()));
    const tok = await request(farm.server.url, 'POST', '/api/tokens', { name: 'w', role: 'worker' }, admin);
    farm.token = tok.body.token as string;
    await farm.connect();
    return farm;
  }

  it('resumes the open round from the journal and finishes', async () => {
    const farm = await killableFarm(['kw0', 'kw1', 'kw2']);
    const { admin, token, ids } = farm;
    const taskId = await farm.createTraining(3, 2);
    const task = async (c: RawClient) =>
      (await c.next((m) => m.type === 'task' && (m.data as { id: number }).id === taskId, 15_000)).data as {
        rank: number;
        attempt: number;
        training: Record<string, unknown>;
      };
    let leases = await Promise.all(farm.clients.map(task));
    const put = (i: number, round: number, x: number, samples: number) =>
      farm.put(taskId, i, leases[i]!, round, x, samples);
    const byRank = (r: number) => leases.findIndex((l) => l.rank === r);

    // Round 1: ranks 0 and 1 acknowledged; rank 2 is half-way through its upload.
    expect((await put(byRank(0), 1, 1, 100)).status).toBe(201);
    expect((await put(byRank(1), 1, 2, 300)).status).toBe(201);
    const half = model([99, 99, 99, 99], [99, 0, 0, -99]);
    const partial = httpRequest(
      `${farm.server.url}/api/tasks/${taskId}/rounds/1/updates/2?attempt=${leases[byRank(2)]!.attempt}&num_samples=5`,
      {
        method: 'PUT',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/octet-stream',
          'content-length': String(half.length),
          'x-ai-farm-client': ids[byRank(2)]!,
        },
      },
    );
    partial.on('error', () => undefined);
    partial.write(half.subarray(0, half.length - 10));
    await sleep(300);
    await farm.kill();
    partial.destroy();
    await farm.restart();
    leases = await Promise.all(farm.clients.map(task));
    const accepted = leases.filter((l) => l.training.accepted).map((l) => l.rank);
    expect(accepted.sort()).toEqual([0, 1]);
    expect(leases[0]!.training).toMatchObject({ round: 1 });
    // A retry of an acknowledged update after the restart is a duplicate.
    const retry = await put(byRank(1), 1, 2, 300);
    expect(retry).toMatchObject({ status: 200, body: { duplicate: true } });
    expect((await put(byRank(2), 1, 6, 600)).status).toBe(201);
    const starts = await Promise.all(farm.clients.map((c) => c.type('round_start', 15_000)));
    const g = await download(farm.server.url, starts[0]!.global_model_url as string, token);
    // (1*100 + 2*300 + 6*600) / 1000 = 4.3: each acknowledged update once, the cut one never.
    expectClose((await values(g.bytes)).a, [4.3, 4.3, 4.3, 4.3]);

    // Round 2: one update in, then SIGKILL again; the sum is rebuilt from the journal.
    expect((await put(byRank(0), 2, 10, 1)).status).toBe(201);
    await farm.kill();
    await farm.restart();
    leases = await Promise.all(farm.clients.map(task));
    expect(leases[0]!.training).toMatchObject({ round: 2 });
    expect((await put(byRank(1), 2, 20, 1)).status).toBe(201);
    expect((await put(byRank(2), 2, 30, 2)).status).toBe(201);
    await Promise.all(farm.clients.map((c) => c.type('training_complete', 15_000)));
    const final = await download(farm.server.url, `/api/tasks/${taskId}/model`, token);
    // (10 + 20 + 2*30) / 4 = 22.5
    const v = await values(final.bytes);
    expectClose(v.a, [22.5, 22.5, 22.5, 22.5]);
    expectClose(v.b, [22.5, 0, 0, -22.5]);
    const done = await request(farm.server.url, 'GET', `/api/tasks/${taskId}`, undefined, admin);
    expect(done.body).toMatchObject({ status: 'completed', result: { rounds: 2 } });
    await farm.server.stop('SIGTERM');
  });

  it('async: a server killed mid-buffer loses no update and counts none twice', async () => {
    const farm = await killableFarm(['aw0', 'aw1', 'aw2']);
    const { admin, token } = farm;
    const taskId = await farm.createTraining(3, 2, { mode: 'async', buffer_size: 2, staleness: 'constant' });
    let leases = await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    const byRank = (r: number) => leases.findIndex((l) => l.rank === r);
    const put = (r: number, from: number, x: number, samples: number) =>
      farm.put(taskId, byRank(r), leases[byRank(r)], from, x, samples);

    // Version 2 from ranks 0 and 1; rank 2's update from version 1 goes into version 2's buffer.
    expect((await put(0, 1, 1, 100)).status).toBe(201);
    expect((await put(1, 1, 3, 100)).status).toBe(201);
    await farm.clients[byRank(0)]!.next((m) => m.type === 'round_start' && m.round === 2, 15_000);
    expect((await put(2, 1, 10, 300)).status).toBe(201);

    // Killed with one of the buffer's two updates in.
    await farm.kill();
    await farm.restart();
    leases = await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    expect(leases[0].training).toMatchObject({ round: 2 });
    // The retry of the acknowledged update is a duplicate, not a second one.
    expect(await put(2, 1, 10, 300)).toMatchObject({ status: 200, body: { duplicate: true } });
    expect((await put(0, 2, 2, 100)).status).toBe(201);
    await Promise.all(farm.clients.map((c) => c.type('training_complete', 15_000)));
    // (10*300 + 2*100) / 400 = 8: rank 2's update once, from the journal.
    const final = await download(farm.server.url, `/api/tasks/${taskId}/model`, token);
    expectClose((await values(final.bytes)).a, [8, 8, 8, 8]);
    const rounds = await request(farm.server.url, 'GET', `/api/tasks/${taskId}/rounds`, undefined, admin);
    expect((rounds.body.items as { num_updates: number }[]).map((r) => r.num_updates)).toEqual([2, 2]);
    await farm.server.stop('SIGTERM');
  });

  it('resumes from the last checkpoint when MODEL_CACHE_DIR lost the open round', async () => {
    const farm = await killableFarm(['cw0', 'cw1'], { CHECKPOINT_FREQUENCY: '1' });
    const { admin, token } = farm;
    const taskId = await farm.createTraining(2, 3);
    let leases = await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    const put = (i: number, round: number, x: number) => farm.put(taskId, i, leases[i], round, x, 100);

    // Round 1 closes (checkpoint of round 1: the mean, 2); one update of round 2 is accepted.
    expect((await put(0, 1, 1)).status).toBe(201);
    expect((await put(1, 1, 3)).status).toBe(201);
    await Promise.all(farm.clients.map((c) => c.type('round_start', 15_000)));
    expect((await put(0, 2, 10)).status).toBe(201);

    // Killed, and the model cache is gone: round 2's global model and its accepted update.
    await farm.kill();
    await rm(join(farm.db.dir, 'models'), { recursive: true, force: true });
    await farm.restart();
    leases = await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    // Round 2 is redone as round 3 from the checkpoint; the task now has 4 rounds.
    expect(leases[0].training).toMatchObject({ round: 3, rounds: 4 });
    const g = await download(farm.server.url, leases[0].training.global_model_url as string, token);
    expect(g.status).toBe(200);
    expectClose((await values(g.bytes)).a, [2, 2, 2, 2]);
    const events = await request(farm.server.url, 'GET', `/api/tasks/${taskId}/events`, undefined, admin);
    const rewound = (events.body.items as { kind: string; message: string }[]).find(
      (e) => e.kind === 'rewound',
    );
    expect(rewound?.message).toMatch(/checkpoint of round 1 as round 3/);

    for (const [round, xs] of [
      [3, [5, 7]],
      [4, [8, 10]],
    ] as const) {
      expect((await put(0, round, xs[0])).status).toBe(201);
      expect((await put(1, round, xs[1])).status).toBe(201);
      if (round === 3) await Promise.all(farm.clients.map((c) => c.type('round_start', 15_000)));
    }
    await Promise.all(farm.clients.map((c) => c.type('training_complete', 15_000)));
    const final = await download(farm.server.url, `/api/tasks/${taskId}/model`, token);
    expectClose((await values(final.bytes)).a, [9, 9, 9, 9]);
    const done = await request(farm.server.url, 'GET', `/api/tasks/${taskId}`, undefined, admin);
    expect(done.body).toMatchObject({ status: 'completed', result: { rounds: 4 } });
    await farm.server.stop('SIGTERM');
  });

  it('keeps a paused round’s deadline stopped across a restart, with the time it had left', async () => {
    const farm = await killableFarm(['pw0', 'pw1']);
    const { admin } = farm;
    const taskId = await farm.createTraining(2, 1, { round_deadline_s: 6 });
    await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    const current = async () =>
      (await request(farm.server.url, 'GET', `/api/tasks/${taskId}/rounds/current`, undefined, admin)).body;
    const deadline = Date.parse((await current()).deadline_at as string);
    await sleep(1000);
    const status = (to: string) =>
      request(farm.server.url, 'PUT', `/api/tasks/${taskId}/status`, { status: to }, admin);
    expect((await status('paused')).status).toBe(200);
    const left = deadline - Date.now();

    // Down, and then paused, past the round's original deadline.
    await farm.kill();
    await sleep(Math.max(0, deadline - Date.now()) + 1500);
    await farm.restart();
    await sleep(1500);
    const events = async () =>
      (await request(farm.server.url, 'GET', `/api/tasks/${taskId}/events`, undefined, admin)).body.items as {
        kind: string;
      }[];
    expect((await events()).map((e) => e.kind)).not.toContain('round_extended');

    const resumedAt = Date.now();
    expect((await status('running')).status).toBe(200);
    let after = deadline;
    for (let i = 0; i < 50 && after === deadline; i++) {
      await sleep(100);
      after = Date.parse((await current()).deadline_at as string);
    }
    // The time left at the pause, counted from the resume (the test's clock reads add ~0.5 s).
    expect(Math.abs(after - (resumedAt + left))).toBeLessThan(1500);
    expect((await events()).map((e) => e.kind)).not.toContain('round_extended');
    await farm.server.stop('SIGTERM');
  });
  it('a sampled round is not sampled again by the restarted server', async () => {
    const farm = await killableFarm(['sw0', 'sw1', 'sw2', 'sw3']);
    const { admin } = farm;
    const taskId = await farm.createTraining(2, 2, { clients_per_round: 2, seed: 7 });
    type Sampled = { round: number; sampled: { client_id: string; rank: number }[] };
    const samples = async () =>
      (
        (await request(farm.server.url, 'GET', `/api/tasks/${taskId}/events`, undefined, admin)).body
          .items as { kind: string; data: Sampled }[]
      )
        .filter((e) => e.kind === 'round_sampled')
        .map((e) => e.data);
    /** Round r's sampled clients upload, each with the lease of its latest task message. */
    const train = async (r: number) => {
      const ev = await waitFor(`round ${r} sampled`, async () =>
        (await samples()).find((e) => e.round === r),
      );
      for (const s of ev.sampled) {
        const i = farm.ids.indexOf(s.client_id);
        const m = await farm.clients[i]!.next(
          (x) =>
            x.type === 'task' &&
            (x.data as { id: number; training: { round: number } }).id === taskId &&
            (x.data as { training: { round: number } }).training.round === r,
          15_000,
        );
        const lease = m.data as { rank: number; attempt: number };
        expect((await farm.put(taskId, i, lease, r, r, 1)).status).toBe(201);
      }
      return ev;
    };
    await train(1);
    const second = await waitFor('round 2 sampled', async () => (await samples()).find((e) => e.round === 2));
    await farm.kill();
    await farm.restart();
    // The clients of round 2 get their task again on reconnecting; nobody is sampled anew.
    expect(await train(2)).toEqual(second);
    expect((await samples()).map((e) => e.round).sort()).toEqual([1, 2]);
    await waitFor('the task completed', async () => {
      const t = await request(farm.server.url, 'GET', `/api/tasks/${taskId}`, undefined, admin);
      return t.body.status === 'completed';
    });
    await farm.server.stop('SIGTERM');
  });
});
