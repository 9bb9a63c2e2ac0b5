import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { startServer, type RunningServer } from '../src/main.js';
import {
  ApiClient,
  ApiError,
  ProtocolError,
  WorkerClient,
  type TaskData,
  type WorkerClientOptions,
} from '../src/worker/sdk.js';
import { LineDisplay } from '../src/worker/display.js';
import { Worker } from '../src/worker/worker.js';
import { createTestDatabase } from './helpers/db.js';
import { startTestServer, testConfig, type TestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from './helpers/ports.js';

// The SDK against the real server: no stand-ins.

const systemInfo = {
  hostname: 'sdk-test',
  cpu: { cores_logical: 4 },
  ram: { total: 8 * 1024 ** 3 },
  gpu: null,
};

let ts: TestServer;
let token: string;
let api: ApiClient;
let clients: WorkerClient[] = [];

beforeAll(async () => {
  ts = await startTestServer('sqlite');
  token = (await ts.api('POST', '/api/tokens', { name: 'sdk-workers', role: 'worker' })).body.token;
  api = new ApiClient({ baseUrl: ts.url, token: ts.adminToken });
});
afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
});
afterAll(async () => {
  await ts?.stop();
});

function client(over: Partial<WorkerClientOptions> = {}): WorkerClient {
  const c = new WorkerClient({
    url: ts.server.wsUrl,
    token,
    systemInfo,
    backoff: { initialMs: 50, maxMs: 500 },
    ...over,
  });
  clients.push(c);
  return c;
}

const commandTask = (name: string) => ({
  type: 'command',
  name,
  requirements: {},
  config: { command: 'true' },
});

describe('WorkerClient against the real server', () => {
  it('registers (the server assigns an id), heartbeats, and hears no_task when nothing fits', async () => {
    const c = client();
    const reg = await c.connect();
    expect(reg).toMatchObject({ type: 'registered', protocol_version: 1 });
    expect(reg.heartbeat_interval).toBeGreaterThan(0);
    expect(c.id).toBe(reg.client_id);
    expect(c.connected).toBe(true);
    expect(await c.heartbeat()).toMatchObject({ type: 'heartbeat_ack' });
    expect(await c.requestTask()).toBeNull();
    const seen = (await ts.api('GET', `/api/clients/${reg.client_id}`)).body;
    expect(seen).toMatchObject({ id: reg.client_id });
  });

  it('gets a pushed task, reports progress and result; stale attempts and repeats are handled', async () => {
    const c = client({ id: 'sdk-progress', maxTasks: 1 });
    await c.connect();
    const pushed = once(c, 'task') as Promise<[TaskData]>;
    const created = await api.tasks.create(commandTask('sdk-progress'));
    const [task] = await pushed;
    expect(task).toMatchObject({ id: created.id, type: 'command', attempt: 1, rank: 0, world_size: 1 });
    const lease = { task_id: task.id, attempt: task.attempt, rank: task.rank };

    expect(await c.sendProgress({ ...lease, progress: 40, metrics: { loss: 0.5 } })).toMatchObject({
      type: 'ack',
      of: 'task_progress',
    });
    const stale = await c.sendProgress({ ...lease, attempt: 99, progress: 41 }).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(ProtocolError);
    expect(stale).toMatchObject({ code: 'stale_attempt' });

    const result = { ...lease, status: 'completed' as const, metrics: { loss: 0.1 }, result: { ok: true } };
    expect(await c.sendResult(result)).toMatchObject({ type: 'ack', of: 'task_result' });
    // A result sent again (a lost ack) is counted once.
    expect(await c.sendResult(result)).toMatchObject({ type: 'ack', duplicate: true });
    expect(await api.tasks.get(task.id)).toMatchObject({
      status: 'completed',
      progress: 100,
      client_id: 'sdk-progress',
    });
  });

  it('emits pause, resume and stop as the task changes through the API', async () => {
    const c = client({ id: 'sdk-control', maxTasks: 1 });
    await c.connect();
    const pushed = once(c, 'task') as Promise<[TaskData]>;
    const { id } = await api.tasks.create(commandTask('sdk-control'));
    await pushed;
    await c.sendProgress({ task_id: id, progress: 1, attempt: 1, rank: 0 });
    for (const [status, event] of [
      ['paused', 'pause'],
      ['running', 'resume'],
      ['cancelled', 'stop'],
    ] as const) {
      const heard = once(c, event);
      await api.tasks.changeStatus(id, status);
      expect((await heard)[0]).toMatchObject({ type: event, task_id: id });
    }
  });

  it('refuses a bad token at once, without retrying', async () => {
    const c = client({ token: 'not-a-token' });
    const drops: unknown[] = [];
    c.on('disconnected', (d) => drops.push(d));
    await expect(c.connect()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(drops).toEqual([]);
  });

  it('gives up when its id is taken over by another connection or belongs to another token', async () => {
    const first = client({ id: 'sdk-dup' });
    await first.connect();
    const lost = once(first, 'closed');
    const second = client({ id: 'sdk-dup' });
    await second.connect();
    // Reconnecting would knock the newer connection off in turn: the older one stops.
    expect((await lost)[0]).toMatchObject({ code: 'client_id_taken' });
    expect(second.connected).toBe(true);

    const other = (await ts.api('POST', '/api/tokens', { name: 'sdk-other', role: 'worker' })).body.token;
    const thief = client({ id: 'sdk-dup', token: other });
    await expect(thief.connect()).rejects.toMatchObject({ code: 'client_id_taken' });
    expect(second.connected).toBe(true);
  });

  it('ApiClient surfaces the API error code', async () => {
    const err = await api.tasks.get(999_999).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 404, code: 'task_not_found' });
    const noAuth = new ApiClient({ baseUrl: ts.url });
    await expect(noAuth.tasks.list()).rejects.toMatchObject({ status: 401 });
  });
});

describe('WorkerClient across a server restart', () => {
  it('reconnects with the same id and delivers a result sent while the server was down', async () => {
    const db = await createTestDatabase('sqlite');
    const adminToken = generateToken();
    const config = testConfig(db, {
      ADMIN_TOKEN: adminToken,
      SERVER_PORT: await freePort(),
      WEBSOCKET_PORT: await freePort(),
    });
    let server: RunningServer | undefined = await startServer(config);
    try {
      const admin = new ApiClient({ baseUrl: server.httpUrl, token: adminToken });
      const wt = await admin.call<{ token: string }>('POST', '/api/tokens', {
        name: 'restart',
        role: 'worker',
      });
      const c = client({ url: server.wsUrl, token: wt.token, backoff: { initialMs: 100, maxMs: 400 } });
      const first = await c.connect();
      const pushed = once(c, 'task') as Promise<[TaskData]>;
      const { id } = await admin.tasks.create(commandTask('survives'));
      const [task] = await pushed;
      await c.sendProgress({ task_id: id, progress: 50, attempt: task.attempt, rank: task.rank });

      const dropped = once(c, 'disconnected');
      await server.stop();
      server = undefined;
      await dropped;
      expect(c.connected).toBe(false);
      const delivered = c.sendResult({
        task_id: id,
        status: 'completed',
        attempt: task.attempt,
        rank: task.rank,
      });

      const again = once(c, 'registered');
      server = await startServer(config);
      expect((await again)[0].client_id).toBe(first.client_id);
      expect(await delivered).toMatchObject({ type: 'ack', of: 'task_result' });
      const done = await waitFor('the task to complete', async () => {
        const t = await admin.tasks.get(id);
        return t.status === 'completed' && t;
      });
      expect(done).toMatchObject({ client_id: first.client_id, attempts: 1 });
    } finally {
      await server?.stop();
      await db.drop();
    }
  });
});

describe('Worker', () => {
  it('answers a task of a type it has no executor for with status error, then takes the next task', async () => {
    const lines: string[] = [];
    const worker = new Worker({
      wsUrl: ts.server.wsUrl,
      httpUrl: ts.url,
      token,
      display: new LineDisplay(false, (l) => lines.push(l)),
      // Claims a type it cannot run, so the server sends it one.
      client: { id: 'sdk-unknown-type', taskTypes: ['command', 'mystery'], systemInfo },
    });
    try {
      await worker.start();
      const mystery = await api.tasks.create({ type: 'mystery', requirements: {}, config: {} });
      const failed = await waitFor('the unknown type to be refused', async () => {
        const t = await api.tasks.get(mystery.id);
        return t.status === 'error' && t;
      });
      expect(failed.error_log).toMatch(/no executor for task type "mystery" \(it runs: command/);
      const next = await api.tasks.create(commandTask('after-mystery'));
      await waitFor(
        'the next task to complete',
        async () => (await api.tasks.get(next.id)).status === 'completed',
      );
      expect(lines.join('\n')).toMatch(/registered as sdk-unknown-type/);
    } finally {
      await worker.shutdown();
    }
  });
});
