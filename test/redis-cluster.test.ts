import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenService } from '../src/auth/token-service.js';
import { RedisPresence } from '../src/bus/presence.js';
import { RedisLink } from '../src/bus/redis-link.js';
import { withSharedTokenCache } from '../src/cache/token-cache.js';
import { silentLogger } from '../src/observability/logger.js';
import { openDatabase, resolveDatabaseTarget } from '../src/storage/db.js';
import { systemClock, toDbTime } from '../src/storage/values.js';
import { readEvents } from './helpers/panel.js';
import { freshPrefix, startFarm, TEST_REDIS_URL, type TestFarm } from './helpers/redis.js';
import { RawClient, registeredClient } from './helpers/ws-client.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * Two server instances sharing one database and one Redis, as a scaled-out farm runs.
 * MariaDB only: several instances on one database is a MySQL/MariaDB deployment (SQLite
 * is one file on one machine, for one instance).
 */
describe('two instances on one MariaDB and one Redis', () => {
  let farm: TestFarm;
  const sockets: RawClient[] = [];
  beforeAll(async () => {
    farm = await startFarm('mysql', 2);
  }, 120_000);
  afterAll(async () => {
    for (const s of sockets) s.close();
    await farm?.stop();
  });

  const wsUrl = (i: number) => `${farm.servers[i]!.wsUrl}/`;

  it('gives each instance its own id', () => {
    const [a, b] = farm.servers;
    expect(a!.instanceId).toMatch(/^[A-Za-z0-9.-]+-[0-9a-f]{12}$/);
    expect(a!.instanceId).not.toBe(b!.instanceId);
  });

  it('a token revoked on A is refused on B at once, over HTTP and for WebSocket upgrades', async () => {
    const user = (await farm.api(0, 'POST', '/api/tokens', { name: 'carol', role: 'user' })).body;
    const worker = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-revoke', role: 'worker' })).body;
    expect(user.token).toMatch(/^afm_/);
    // Both instances have used (and cached) the tokens.
    for (const i of [0, 1])
      expect((await farm.api(i, 'GET', '/api/tasks', undefined, user.token)).status).toBe(200);
    const before = await RawClient.connect(wsUrl(1), worker.token);
    before.close();

    expect((await farm.api(0, 'DELETE', `/api/tokens/${user.id}`)).status).toBe(200);
    expect((await farm.api(0, 'DELETE', `/api/tokens/${worker.id}`)).status).toBe(200);
    // No wait: the very next request on B is refused.
    const onB = await farm.api(1, 'GET', '/api/tasks', undefined, user.token);
    expect(onB.status).toBe(401);
    expect(onB.body.error.code).toBe('unauthorized');
    await expect(RawClient.connect(wsUrl(1), worker.token)).rejects.toThrow(/HTTP 401/);
    expect((await farm.api(0, 'GET', '/api/tasks', undefined, user.token)).status).toBe(401);
  });

  it('a token revoked by the command line (straight in the database) is refused at once too', async () => {
    const user = (await farm.api(0, 'POST', '/api/tokens', { name: 'dave', role: 'user' })).body;
    for (const i of [0, 1])
      expect((await farm.api(i, 'GET', '/api/tasks', undefined, user.token)).status).toBe(200);
    // What `ai-farm tokens revoke` runs: its own database handle and Redis connection.
    const handle = await openDatabase(resolveDatabaseTarget(farm.servers[0]!.config));
    try {
      await withSharedTokenCache(farm.servers[0]!.config, silentLogger(), (cache) =>
        new TokenService(handle.db, systemClock, cache).revoke(user.id, 'cli'),
      );
    } finally {
      await handle.close();
    }
    for (const i of [0, 1])
      expect((await farm.api(i, 'GET', '/api/tasks', undefined, user.token)).status).toBe(401);
  });

  it('a worker token revoked on A (API or command line) closes its sockets on both instances with 4001', async () => {
    const viaApi = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-rev-api', role: 'worker' })).body;
    const viaCli = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-rev-cli', role: 'worker' })).body;
    const suffix = randomBytes(3).toString('hex');
    const apiSockets = [
      await registeredClient(wsUrl(1), viaApi.token, `rev-b-${suffix}`),
      await RawClient.connect(wsUrl(0), viaApi.token),
    ];
    const cliSocket = await registeredClient(wsUrl(1), viaCli.token, `rev-cli-b-${suffix}`);
    sockets.push(...apiSockets, cliSocket);

    expect((await farm.api(0, 'DELETE', `/api/tokens/${viaApi.id}`)).status).toBe(200);
    for (const s of apiSockets) {
      expect(await s.closed(15_000)).toBe(4001);
      expect(s.closeReason).toMatch(/revoked/);
    }
    // What `ai-farm tokens revoke` runs: its own database handle, and the bus through Redis.
    const handle = await openDatabase(resolveDatabaseTarget(farm.servers[0]!.config));
    try {
      await withSharedTokenCache(farm.servers[0]!.config, silentLogger(), (cache, bus) =>
        new TokenService(handle.db, systemClock, cache, bus).revoke(viaCli.id, 'cli'),
      );
    } finally {
      await handle.close();
    }
    expect(await cliSocket.closed(15_000)).toBe(4001);
  });

  it('work created on A reaches a worker on B, and pause/resume/stop on A reach it too', async () => {
    const worker = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-ctl', role: 'worker' })).body;
    const w = await registeredClient(wsUrl(1), worker.token, `ctl-${randomBytes(3).toString('hex')}`);
    sockets.push(w);
    const created = await farm.api(0, 'POST', '/api/tasks', { type: 'cpu', requirements: {}, config: {} });
    expect(created.status).toBe(201);
    const id = created.body.id as number;
    const task = await w
      .next((m) => m.type === 'task' && (m.data as { id: number }).id === id, 20_000)
      .catch((err: Error) => {
        throw new Error(`${err.message}; got ${JSON.stringify(w.received)}`);
      });
    expect(task.data).toMatchObject({ id, attempt: 1 });
    await waitFor(
      'the task to run',
      async () => (await farm.api(0, 'GET', `/api/tasks/${id}`)).body.status === 'running',
      20_000,
    );

    expect((await farm.api(0, 'PUT', `/api/tasks/${id}/status`, { status: 'paused' })).status).toBe(200);
    expect(await w.next((m) => m.type === 'pause' && m.task_id === id, 20_000)).toBeTruthy();
    expect((await farm.api(0, 'PUT', `/api/tasks/${id}/status`, { status: 'running' })).status).toBe(200);
    expect(await w.next((m) => m.type === 'resume' && m.task_id === id, 20_000)).toBeTruthy();
    expect((await farm.api(0, 'PUT', `/api/tasks/${id}/status`, { status: 'cancelled' })).status).toBe(200);
    expect(await w.next((m) => m.type === 'stop' && m.task_id === id, 20_000)).toBeTruthy();
  });

  it('a training task owned by A but placed by B: every rank gets its round in the task', async () => {
    const worker = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-train', role: 'worker' })).body;
    // Only this test's workers have 64 cores: no other socket of this farm takes a rank.
    const created = await farm.api(0, 'POST', '/api/tasks', {
      type: 'command',
      requirements: { min_cpu_cores: 64 },
      world_size: 2,
      config: { rounds: 2, round_deadline_s: 600 },
    });
    expect(created.status).toBe(201);
    const id = created.body.id as number;
    // A owns the training before any round exists, as when A described a rank first.
    const db = farm.servers[0]!.database.db;
    await db
      .insertInto('training_owners')
      .values({ task_id: id, instance_id: farm.servers[0]!.instanceId, acquired_at: toDbTime(new Date()) })
      .execute();
    const ranks = await Promise.all(
      [0, 1].map((i) =>
        registeredClient(wsUrl(1), worker.token, `tr${i}-${randomBytes(3).toString('hex')}`, { cores: 64 }),
      ),
    );
    sockets.push(...ranks);
    for (const w of ranks) {
      const task = await w.next((m) => m.type === 'task' && (m.data as { id: number }).id === id, 20_000);
      expect((task.data as { training?: unknown }).training).toMatchObject({ round: 1, rounds: 2 });
    }
    expect((await farm.api(1, 'GET', `/api/tasks/${id}`)).body.status).toBe('running');
  });

  it('a panel stream on B shows a task created and a client connecting on A', async () => {
    const res = await fetch(`${farm.servers[1]!.httpUrl}/api/events`, {
      headers: { authorization: `Bearer ${farm.adminToken}` },
    });
    expect(res.status).toBe(200);
    const clientId = `panel-${randomBytes(3).toString('hex')}`;
    const events = readEvents(
      res,
      (evs) =>
        evs.some((e) => e.event === 'task' && (e.data as { task_id: number }).task_id === id) &&
        evs.some((e) => e.event === 'client' && (e.data as { client_id: string }).client_id === clientId),
      20_000,
    );
    // The stream is open (its first overview sent) before the changes happen.
    await sleep(200);
    let id = -1;
    id = (await farm.api(0, 'POST', '/api/tasks', { type: 'gpu-only', requirements: { gpu_count: 8 } })).body
      .id;
    const worker = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-panel', role: 'worker' })).body;
    sockets.push(await registeredClient(wsUrl(0), worker.token, clientId));
    const seen = await events;
    expect(seen.some((e) => e.event === 'task' && (e.data as { task_id: number }).task_id === id)).toBe(true);
    expect(
      seen.some((e) => e.event === 'client' && (e.data as { client_id: string }).client_id === clientId),
    ).toBe(true);
  });

  it('counts connected clients farm-wide, on either instance', async () => {
    const token = (await farm.api(0, 'POST', '/api/tokens', { name: 'w-count', role: 'worker' })).body.token;
    const count = async (i: number) =>
      (await farm.api(i, 'GET', '/api/metrics')).body.connected_clients as number;
    const base = await count(0);
    const idA = `pa-${randomBytes(3).toString('hex')}`;
    const idB = `pb-${randomBytes(3).toString('hex')}`;
    const a = await registeredClient(wsUrl(0), token, idA);
    const b = await registeredClient(wsUrl(1), token, idB);
    sockets.push(a, b);
    await waitFor(
      'count',
      async () => (await count(0)) === base + 2 && (await count(1)) === base + 2,
      20_000,
    );
    const listed = async (i: number) =>
      new Map(
        (
          (await farm.api(i, 'GET', '/api/clients?limit=200')).body.items as {
            id: string;
            connected: boolean;
          }[]
        ).map((c) => [c.id, c.connected]),
      );
    const onA = await listed(0);
    expect(onA.get(idA)).toBe(true);
    expect(onA.get(idB)).toBe(true);
    b.ws.close(1000);
    await waitFor('count after a goodbye', async () => (await count(0)) === base + 1, 20_000);
    await waitFor('client B shown disconnected', async () => (await listed(0)).get(idB) === false, 20_000);
    expect((await listed(1)).get(idA)).toBe(true);
  });
});

describe('rate limit shared by two instances', () => {
  let farm: TestFarm;
  beforeAll(async () => {
    farm = await startFarm('mysql', 2, { RATE_LIMIT: '5/minute' });
  }, 120_000);
  afterAll(async () => farm?.stop());

  it('draws one budget per address across instances; worker model transfers do not count', async () => {
    for (const i of [0, 0, 1, 0, 1]) expect((await farm.api(i, 'GET', '/api/tasks')).status).toBe(200);
    for (const i of [0, 1]) {
      const r = await farm.api(i, 'GET', '/api/tasks');
      expect(r.status).toBe(429);
      expect(r.body.error.code).toBe('rate_limited');
    }
    // The admin's budget is spent: the worker token is made through the service itself.
    const worker = await farm.servers[0]!.services.tokens.create('w-transfer', 'worker', 'test');
    for (let k = 0; k < 3; k++) {
      const r = await farm.api(k % 2, 'GET', '/api/tasks/999999/model', undefined, worker.token);
      expect(r.status).toBe(404);
    }
    // The same route with an API caller's token (or none) is counted as usual.
    expect((await farm.api(0, 'GET', '/api/tasks/999999/model')).status).toBe(429);
    expect((await farm.api(1, 'GET', '/api/tasks/999999/model', undefined, null)).status).toBe(429);
    // Any other route with the worker token is counted too.
    expect((await farm.api(1, 'GET', '/api/tasks/999999/rounds', undefined, worker.token)).status).toBe(429);
  });
});

describe('redis presence', () => {
  it('forgets the clients of an instance that died without a goodbye', async () => {
    const prefix = freshPrefix();
    const link = (id: string) =>
      new RedisLink({ url: TEST_REDIS_URL, prefix, instanceId: id, logger: silentLogger() });
    const [la, lb] = [link('a'), link('b')];
    const a = new RedisPresence(la, () => ['c1', 'c2'], silentLogger(), { heartbeatMs: 100, ttlMs: 400 });
    const b = new RedisPresence(lb, () => ['c3'], silentLogger(), { heartbeatMs: 100, ttlMs: 400 });
    try {
      await Promise.all([la.whenHealthy(), lb.whenHealthy()]);
      a.start();
      b.start();
      await waitFor('both instances seen', async () => (await b.connected()).size === 3, 10_000);
      expect(Object.fromEntries(await b.connected())).toEqual({ c1: 'a', c2: 'a', c3: 'b' });
      // A dies: its connection goes, its heartbeat stops, nothing is withdrawn.
      la.close();
      await waitFor('dead instance forgotten', async () => (await b.connected()).size === 1, 10_000);
      expect(Object.fromEntries(await b.connected())).toEqual({ c3: 'b' });
      // Pruned from the hash too.
      expect(await lb.cmd.hkeys(lb.key('presence:clients'))).toEqual(['c3']);
    } finally {
      await b.close();
      lb.close();
      la.close();
    }
  });
});
