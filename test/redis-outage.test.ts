import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateRedis, startFarm, type TestFarm } from './helpers/redis.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';
import { waitFor } from './helpers/wait.js';

/** A worker that completes every task it is sent. */
function completeEverything(c: RawClient): void {
  c.ws.on('message', (raw) => {
    const m = JSON.parse(String(raw)) as { type: string; data?: { id: number; attempt: number } };
    if (m.type === 'task' && m.data) {
      c.send({
        type: 'task_result',
        task_id: m.data.id,
        attempt: m.data.attempt,
        status: 'completed',
        metrics: {},
      });
    }
  });
}

const logLines = (dir: string, file: string): Record<string, unknown>[] => {
  try {
    return readFileSync(join(dir, file), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  } catch {
    return [];
  }
};

/**
 * Redis goes away in the middle of a run (SIGKILL of a private redis-server) and comes
 * back empty: the farm keeps serving from the database, nothing fails, nothing is lost.
 * Two instances on one MariaDB (see redis-cluster.test.ts for why MariaDB only).
 */
describe('Redis outage with two instances', () => {
  let redis: PrivateRedis;
  let farm: TestFarm;
  const sockets: RawClient[] = [];
  const created: number[] = [];
  let workerToken = '';

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    farm = await startFarm('mysql', 2, { RATE_LIMIT: '100000/minute' }, redis.url);
    workerToken = (await farm.api(0, 'POST', '/api/tokens', { name: 'outage-w', role: 'worker' })).body.token;
    for (const [i, id] of [
      [0, 'outage-a'],
      [1, 'outage-b'],
    ] as const) {
      const c = await registeredClient(`${farm.servers[i]!.wsUrl}/`, workerToken, id, { max_tasks: 4 });
      completeEverything(c);
      sockets.push(c);
    }
  }, 120_000);
  afterAll(async () => {
    for (const s of sockets) s.close();
    await farm?.stop();
    await redis?.stop();
  });

  const createTasks = async (n: number) => {
    for (let k = 0; k < n; k++) {
      const r = await farm.api(k % 2, 'POST', '/api/tasks', { type: 'cpu', requirements: {}, config: { k } });
      expect(r.status).toBe(201);
      created.push(r.body.id as number);
    }
  };
  const allCompleted = async () => {
    for (const id of created) {
      const r = await farm.api(created.indexOf(id) % 2, 'GET', `/api/tasks/${id}`);
      if (r.body.status !== 'completed') return false;
    }
    return true;
  };

  it('before, during and after the outage: every task completes, no request fails, one log line each way', async () => {
    await createTasks(6);
    await waitFor('tasks created before the outage', allCompleted, 60_000);

    await redis.kill();
    // Requests during the outage: auth (cache misses go to the database), reads, creates.
    const fresh = (await farm.api(1, 'POST', '/api/tokens', { name: 'during', role: 'user' })).body;
    expect(fresh.token).toMatch(/^afm_/);
    for (const i of [0, 1]) {
      expect((await farm.api(i, 'GET', '/api/tasks', undefined, fresh.token)).status).toBe(200);
      expect((await farm.api(i, 'GET', '/api/metrics')).status).toBe(200);
      expect((await farm.api(i, 'GET', '/api/clients')).status).toBe(200);
    }
    await createTasks(6);
    // A revocation while Redis is away still holds everywhere: the database answers.
    expect((await farm.api(0, 'DELETE', `/api/tokens/${fresh.id}`)).status).toBe(200);
    expect((await farm.api(1, 'GET', '/api/tasks', undefined, fresh.token)).status).toBe(401);
    await waitFor('tasks created during the outage', allCompleted, 60_000);

    await redis.restart();
    const dirs = farm.servers.map((s) => s.config.LOG_DIR);
    const said = (dir: string, text: string) =>
      logLines(dir, 'server.log').filter((l) => String(l.msg).startsWith(text)).length;
    await waitFor('recovery logged', () => dirs.every((d) => said(d, 'redis back') === 1), 30_000);
    await createTasks(6);
    await waitFor('tasks created after the outage', allCompleted, 60_000);
    expect(created).toHaveLength(18);
    // A second token revoked after the recovery is refused on the other instance at once.
    const late = (await farm.api(0, 'POST', '/api/tokens', { name: 'after', role: 'user' })).body;
    expect((await farm.api(1, 'GET', '/api/tasks', undefined, late.token)).status).toBe(200);
    expect((await farm.api(0, 'DELETE', `/api/tokens/${late.id}`)).status).toBe(200);
    expect((await farm.api(1, 'GET', '/api/tasks', undefined, late.token)).status).toBe(401);

    for (const dir of dirs) {
      expect(said(dir, 'redis unavailable'), dir).toBe(1);
      expect(said(dir, 'redis back'), dir).toBe(1);
      const failed = logLines(dir, 'access.log').filter((l) => Number(l.status) >= 500);
      expect(failed, dir).toEqual([]);
    }
    // Presence was re-published: both workers count again on both instances.
    for (const i of [0, 1]) {
      await waitFor(
        'presence after the outage',
        async () => (await farm.api(i, 'GET', '/api/metrics')).body.connected_clients === 2,
        30_000,
      );
    }
  }, 300_000);

  it('a Redis that hangs (SIGSTOP) is noticed within seconds; requests stop waiting on it', async () => {
    const dirs = farm.servers.map((s) => s.config.LOG_DIR);
    const said = (dir: string, text: string) =>
      logLines(dir, 'server.log').filter((l) => String(l.msg).startsWith(text)).length;
    const before = dirs.map((d) => said(d, 'redis unavailable'));
    redis.freeze();
    await waitFor(
      'the hang noticed',
      () => dirs.every((d, i) => said(d, 'redis unavailable') === (before[i] as number) + 1),
      15_000,
    );
    // Token lookups and rate-limit counters go to the database at once, not after a timeout.
    for (const i of [0, 1, 0, 1]) {
      const t0 = Date.now();
      expect((await farm.api(i, 'GET', '/api/tasks')).status).toBe(200);
      expect(Date.now() - t0).toBeLessThan(1500);
    }
    await createTasks(4);
    await waitFor('tasks created while Redis hung', allCompleted, 60_000);
    redis.thaw();
    await waitFor(
      'recovery after the hang logged',
      () => dirs.every((d) => said(d, 'redis back') === 2),
      30_000,
    );
    for (const dir of dirs) expect(said(dir, 'redis unavailable'), dir).toBe(2);
  }, 120_000);
});
