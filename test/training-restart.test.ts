import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { startCliServer, type CliServer } from './helpers/cli.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/db.js';
import { request } from './helpers/server.js';
import { download, expectClose, model, upload, values } from './helpers/training.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';

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

  it('resumes the open round from the journal and finishes', async () => {
    const db: TestDatabase = await createTestDatabase(dialect);
    cleanups.push(() => db.drop());
    const admin = generateToken();
    const env = {
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      DATABASE_URL: db.url,
      DATA_DIR: join(db.dir, 'data'),
      LOG_DIR: join(db.dir, 'logs'),
      MODEL_CACHE_DIR: join(db.dir, 'models'),
      CHECKPOINT_DIR: join(db.dir, 'checkpoints'),
      RATE_LIMIT: 'off',
      ADMIN_TOKEN: admin,
    };
    let server: CliServer = await startCliServer([], env);
    cleanups.push(() => server.stop('SIGKILL'));
    const tok = await request(server.url, 'POST', '/api/tokens', { name: 'w', role: 'worker' }, admin);
    const token = tok.body.token as string;
    const ids = ['kw0', 'kw1', 'kw2'];
    let clients: RawClient[] = [];
    const connect = async () => {
      clients = [];
      for (const id of ids) {
        const c = await registeredClient(`${server.url.replace('http', 'ws')}/ws`, token, id, {
          max_tasks: 1,
        });
        clients.push(c);
      }
    };
    cleanups.push(async () => clients.forEach((c) => c.close()));
    await connect();
    const created = await request(
      server.url,
      'POST',
      '/api/tasks',
      { type: 'command', requirements: {}, world_size: 3, config: { rounds: 2 } },
      admin,
    );
    const taskId = created.body.id as number;
    const task = async (c: RawClient) =>
      (await c.next((m) => m.type === 'task' && (m.data as { id: number }).id === taskId, 15_000)).data as {
        rank: number;
        attempt: number;
        training: Record<string, unknown>;
      };
    let leases = await Promise.all(clients.map(task));
    const put = (i: number, round: number, x: number, samples: number) =>
      upload({
        base: server.url,
        token,
        clientId: ids[i]!,
        taskId,
        round,
        rank: leases[i]!.rank,
        attempt: leases[i]!.attempt,
        numSamples: samples,
        body: model([x, x, x, x], [x, 0, 0, -x]),
      });
    const byRank = (r: number) => leases.findIndex((l) => l.rank === r);

    // Round 1: ranks 0 and 1 acknowledged; rank 2 is half-way through its upload.
    expect((await put(byRank(0), 1, 1, 100)).status).toBe(201);
    expect((await put(byRank(1), 1, 2, 300)).status).toBe(201);
    const half = model([99, 99, 99, 99], [99, 0, 0, -99]);
    const partial = httpRequest(
      `${server.url}/api/tasks/${taskId}/rounds/1/updates/2?attempt=${leases[byRank(2)]!.attempt}&num_samples=5`,
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
    await new Promise((r) => setTimeout(r, 300));
    await server.stop('SIGKILL');
    partial.destroy();
    clients.forEach((c) => c.close());

    server = await startCliServer([], env);
    await connect();
    leases = await Promise.all(clients.map(task));
    const accepted = leases.filter((l) => l.training.accepted).map((l) => l.rank);
    expect(accepted.sort()).toEqual([0, 1]);
    expect(leases[0]!.training).toMatchObject({ round: 1 });
    // A retry of an acknowledged update after the restart is a duplicate.
    const retry = await put(byRank(1), 1, 2, 300);
    expect(retry).toMatchObject({ status: 200, body: { duplicate: true } });
    expect((await put(byRank(2), 1, 6, 600)).status).toBe(201);
    const starts = await Promise.all(clients.map((c) => c.type('round_start', 15_000)));
    const g = await download(server.url, starts[0]!.global_model_url as string, token);
    // (1*100 + 2*300 + 6*600) / 1000 = 4.3: each acknowledged update once, the cut one never.
    expectClose((await values(g.bytes)).a, [4.3, 4.3, 4.3, 4.3]);

    // Round 2: one update in, then SIGKILL again; the sum is rebuilt from the journal.
    expect((await put(byRank(0), 2, 10, 1)).status).toBe(201);
    await server.stop('SIGKILL');
    clients.forEach((c) => c.close());
    server = await startCliServer([], env);
    await connect();
    leases = await Promise.all(clients.map(task));
    expect(leases[0]!.training).toMatchObject({ round: 2 });
    expect((await put(byRank(1), 2, 20, 1)).status).toBe(201);
    expect((await put(byRank(2), 2, 30, 2)).status).toBe(201);
    await Promise.all(clients.map((c) => c.type('training_complete', 15_000)));
    const final = await download(server.url, `/api/tasks/${taskId}/model`, token);
    // (10 + 20 + 2*30) / 4 = 22.5
    const v = await values(final.bytes);
    expectClose(v.a, [22.5, 22.5, 22.5, 22.5]);
    expectClose(v.b, [22.5, 0, 0, -22.5]);
    const done = await request(server.url, 'GET', `/api/tasks/${taskId}`, undefined, admin);
    expect(done.body).toMatchObject({ status: 'completed', result: { rounds: 2 } });
    await server.stop('SIGTERM');
  });
});
