import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';
import { adminPanelBody, frames, LINEAR_MODEL, runOriginalClient } from './helpers/original-client.js';
import { RawClient, systemInfo } from './helpers/ws-client.js';

// The original AI Farm client's behaviour on the wire (test/clients/original_client.py),
// against the real server: its admin panel's task body in, its frames out.

/** A model server of the original's kind (its model_server.py's contract), on a random port. */
async function originalModelServer(): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const m = /^\/models\/([^/]+)\/([^/]+)$/.exec(req.url ?? '');
    if (!m) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: m[1], version: m[2], code: LINEAR_MODEL }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe.each(DIALECTS)('the original AI Farm client on %s', (dialect) => {
  let ts: TestServer;
  /** The original client as `clientId` on this server, with `args`. */
  const runAs = (clientId: string, args: string[]) =>
    runOriginalClient(['--url', ts.server.wsUrl, '--id', clientId, ...args]);
  let models: Awaited<ReturnType<typeof originalModelServer>>;

  beforeAll(async () => {
    ts = await startTestServer(dialect, { ALLOW_ANONYMOUS_CLIENTS: true });
    models = await originalModelServer();
  });
  afterAll(async () => {
    await ts?.stop();
    await models?.close();
  });

  it('POST /api/tasks: its bodies and requirement keys accepted, hostile ones refused naming the field', async () => {
    const aliased = await ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: { min_ram: 0.5, min_gpu_memory: 4 },
      config: { command: ['true'] },
    });
    expect(aliased.status).toBe(201);
    expect(aliased.body.requirements).toEqual({ min_ram_gb: 0.5, min_gpu_memory_gb: 4 });
    expect((await ts.api('DELETE', `/api/tasks/${aliased.body.id}`)).status).toBeLessThan(300);
    const refused = async (body: unknown, path = '/api/tasks') => {
      const r = await ts.api('POST', path, body);
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      return `${r.body.error.code}: ${r.body.error.message}`;
    };
    expect(await refused({ type: 'command', requirements: { min_ram: 1, min_ram_gb: 2 } })).toMatch(
      /^conflicting_requirements: .*min_ram/,
    );
    expect(await refused(adminPanelBody('http://x/models/a/b', { n_clients: 'three' }))).toMatch(
      /^invalid_body: body\.n_clients/,
    );
    expect(await refused(adminPanelBody('http://x/models/a/b', { requirements: { min_vram: 1 } }))).toMatch(
      /requirements/,
    );
    expect(await refused(adminPanelBody('::nonsense::'))).toMatch(/^invalid_url/);
    const modelPort = new URL(ts.server.modelUrl).port;
    expect(await refused(adminPanelBody(`http://127.0.0.1:${modelPort}/models/a`))).toMatch(
      /^invalid_model_url/,
    );
    expect(
      await refused(
        { tasks: [{ type: 'command', requirements: {} }, adminPanelBody('http://x/m', { epochs: 0 })] },
        '/api/tasks/batch',
      ),
    ).toMatch(/^invalid_body: tasks\[1\]: body\.epochs/);
    // Our own bodies keep refusing unknown fields.
    expect(await refused({ type: 'command', requirements: {}, bogus: 1 })).toMatch(/bogus/);
    const batch = await ts.api('POST', '/api/tasks/batch', {
      tasks: [adminPanelBody('http://x/models/a/1', { distributed: true, n_clients: 2 })],
    });
    expect(batch.status).toBe(201);
    const made = (await ts.api('GET', `/api/tasks/${batch.body.ids[0]}`)).body;
    expect(made).toMatchObject({ world_size: 2, config: { n_clients: 2, url: 'http://x/models/a/1' } });
    await ts.api('DELETE', `/api/tasks/${made.id}`);
  });

  it('answers its distributed messages for work it does not hold, and odd heartbeats, without harm', async () => {
    const c = await RawClient.connect(ts.server.wsUrl, null);
    try {
      c.send(systemInfo(`orig-hostile-${dialect}`));
      await c.type('registered');
      c.send({ type: 'init_distributed', task_id: '999999', client_id: `orig-hostile-${dialect}`, rank: 0 });
      expect(await c.type('init_distributed')).toEqual({
        type: 'init_distributed',
        reply_to: null,
        task_id: 999999,
        status: 'error',
        code: 'stale_attempt',
        error: expect.stringMatching(/task 999999 is not assigned/),
      });
      c.send({ type: 'distributed_cleanup', task_id: 5, msg_id: 'dc' });
      expect(await c.type('error')).toMatchObject({ reply_to: 'dc', code: 'stale_attempt' });
      c.send({ type: 'init_distributed', task_id: 'abc', msg_id: 'bad' });
      expect(await c.type('error')).toMatchObject({ reply_to: 'bad', code: 'invalid_message' });
      c.send({
        type: 'heartbeat',
        msg_id: 'hb',
        system_info: { cpu: 'x', ram: { percent: 'y' }, gpu: [null, 7] },
      });
      expect(await c.type('heartbeat_ack')).toMatchObject({ reply_to: 'hb' });
      // Idle and nothing pending: its task_request is answered no_task, in its shape.
      c.send({ type: 'task_request', client_id: `orig-hostile-${dialect}` });
      expect(await c.type('no_task')).toMatchObject({ type: 'no_task' });
    } finally {
      // A goodbye (1000), seen by the server before the next test queues work it could take.
      c.ws.close(1000);
      await waitFor(
        'the hostile client to be dropped',
        async () => !(await ts.api('GET', `/api/clients/orig-hostile-${dialect}`)).body.connected,
      );
    }
  });

  it("runs a task created with its admin panel's body to completion, with no error frame", async () => {
    const created = await ts.api('POST', '/api/tasks', adminPanelBody(`${models.url}/models/sonnet/1.0`));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.id as number;
    expect(created.body).toMatchObject({
      type: 'training',
      name: 'sonnet',
      world_size: 1,
      requirements: { min_cpu_cores: 1, min_ram_gb: 0.01, min_gpu_memory_gb: 0 },
      config: {
        url: `${models.url}/models/sonnet/1.0`,
        version: '1.0',
        batch_size: 10,
        epochs: 3,
        n_clients: 3,
      },
    });
    expect(created.body.config.model).toBeUndefined(); // not our model server

    const run = await runAs(`orig-${dialect}`, [
      '--idle',
      '0.5',
      '--batch-sleep',
      '0.2',
      '--hold-last-progress',
    ]);
    expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
    // It read the original's requirement keys, in GiB and cores.
    expect(run.events.find((e) => e.event === 'requirements')).toMatchObject({
      task_id: id,
      min_gpu_memory: 0,
      min_cpu_cores: 1,
      min_ram: 0.01,
    });
    const task = run.events.find((e) => e.event === 'task');
    expect(task?.config).toMatchObject({ rank: 0, world_size: 1, name: 'sonnet', distributed: false });
    const trained = run.events.find((e) => e.event === 'trained') as unknown as { losses: number[] };
    expect(trained.losses.at(-1)).toBeLessThan(trained.losses[0] as number);
    // Progress it had queued went out after its result, and drew no error.
    expect(run.events.some((e) => e.event === 'sent_after_result' && e.type === 'task_progress')).toBe(true);
    expect(frames(run, 'error')).toEqual([]);
    // A heartbeat went out while it was idle (before the task was pushed or after).
    const done = await waitFor('the task to complete', async () => {
      const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
      return t.status === 'completed' && t;
    });
    expect(done).toMatchObject({ client_id: `orig-${dialect}`, progress: 100 });
    expect(done.result).toMatchObject({
      metrics: { status: 'completed', current_epoch: 3, total_epochs: 3 },
    });
  });

  it('gives a client registered its way one task at a time, takes utilization from its heartbeats', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await ts.api(
        'POST',
        '/api/tasks',
        adminPanelBody(`${models.url}/models/m${i}/1.0`, { epochs: 1 }),
      );
      expect(r.status).toBe(201);
      ids.push(r.body.id as number);
    }
    const clientId = `orig-serial-${dialect}`;
    const run = await runAs(clientId, [
      '--tasks',
      '3',
      '--idle',
      '0.3',
      '--batch-sleep',
      '0.05',
      '--linger',
      '3', // heartbeats written every 2 s (CLIENT_TOUCH_MS) while it is connected
    ]);
    expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
    const tasks = frames(run, 'task');
    expect(tasks.map((f) => (f.data as { id: number }).id).sort()).toEqual(ids);
    // No task frame arrived while it was running another one.
    const busy = run.events.filter((e) => e.event === 'frame' && e.type === 'task' && e.busy_with !== null);
    expect(busy).toEqual([]);
    expect(frames(run, 'error')).toEqual([]);
    for (const id of ids) {
      await waitFor(
        'the task to complete',
        async () => (await ts.api('GET', `/api/tasks/${id}`)).body.status === 'completed',
      );
    }
    expect(run.events.some((e) => e.event === 'heartbeat')).toBe(true);
    const client = await waitFor('the heartbeat utilization', async () => {
      const c = (await ts.api('GET', `/api/clients/${clientId}`)).body;
      return c.utilization && c;
    });
    expect(client.utilization).toMatchObject({
      cpu_utilization: expect.any(Number),
      ram_utilization: expect.any(Number),
    });
  });

  it('receives pause, resume and stop in its shape ({"type": "pause", "task_id": N})', async () => {
    const body = adminPanelBody(`${models.url}/models/sonnet/1.0`, { epochs: 4 });
    const a = (await ts.api('POST', '/api/tasks', body)).body.id as number;
    const b = (await ts.api('POST', '/api/tasks', body)).body.id as number;
    const clientId = `orig-control-${dialect}`;
    const running = runAs(clientId, ['--tasks', '3', '--batch-sleep', '0.1']);
    const progressing = async (id: number) => {
      const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
      return t.status === 'running' && t.progress > 0;
    };
    await waitFor(`task ${a} progressing`, () => progressing(a), 30_000);
    expect((await ts.api('PUT', `/api/tasks/${a}/status`, { status: 'paused' })).status).toBe(200);
    expect((await ts.api('PUT', `/api/tasks/${a}/status`, { status: 'running' })).status).toBe(200);
    await waitFor(`task ${b} progressing`, () => progressing(b), 30_000);
    expect((await ts.api('PUT', `/api/tasks/${b}/status`, { status: 'cancelled' })).status).toBe(200);
    // It is still running b: c waits for it rather than queue up behind it unread.
    const c = (await ts.api('POST', '/api/tasks', { ...body, epochs: 1 })).body.id as number;
    const run = await running;
    expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
    expect(frames(run, 'pause')).toEqual([{ type: 'pause', task_id: a }]);
    expect(frames(run, 'resume')).toEqual([{ type: 'resume', task_id: a }]);
    expect(frames(run, 'stop')).toEqual([{ type: 'stop', task_id: b }]);
    expect((await ts.api('GET', `/api/tasks/${a}`)).body.status).toBe('completed');
    expect((await ts.api('GET', `/api/tasks/${b}`)).body.status).toBe('cancelled');
    // It ignores stop (as the original does) and trains on: its progress is dropped quietly;
    // only its result, which no longer counts, is answered with an error.
    expect(frames(run, 'error').map((f) => f.code)).toEqual(['stale_attempt']);
    expect(frames(run, 'task').map((f) => (f.data as { id: number }).id)).toEqual([a, b, c]);
    expect(
      run.events.filter((e) => e.event === 'frame' && e.type === 'task' && e.busy_with !== null),
    ).toEqual([]);
    await waitFor(
      'the task to complete',
      async () => (await ts.api('GET', `/api/tasks/${c}`)).body.status === 'completed',
    );
  });

  it('runs a distributed task: n_clients ranks, rank and world_size in config, init_distributed answered', async () => {
    const created = await ts.api(
      'POST',
      '/api/tasks',
      adminPanelBody(`${models.url}/models/sonnet/1.0`, { distributed: true, n_clients: 2, epochs: 2 }),
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.world_size).toBe(2);
    const id = created.body.id as number;
    const runs = await Promise.all(
      ['a', 'b'].map((s) => runAs(`orig-dist-${s}-${dialect}`, ['--idle', '0.5'])),
    );
    const seen = runs.map((run) => {
      expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
      expect(frames(run, 'error')).toEqual([]);
      const d = run.events.find((e) => e.event === 'distributed');
      expect(d).toMatchObject({ task_id: id, world_size: 2, config_world_size: 2, master_port: 29500 });
      expect(d?.rank).toBe(d?.config_rank);
      const answer = frames(run, 'init_distributed')[0];
      expect(answer).toMatchObject({ status: 'ok', task_id: id });
      return d as unknown as {
        rank: number;
        shard_info: { id: number; start_point: number; end_point: number };
      };
    });
    expect(seen.map((d) => d.rank).sort()).toEqual([0, 1]);
    const shards = seen.map((d) => d.shard_info).sort((a, b) => a.id - b.id);
    expect(shards).toEqual([
      { id: 0, total_shards: 2, start_point: 0, end_point: 50 },
      { id: 1, total_shards: 2, start_point: 50, end_point: 100 },
    ]);
    await waitFor(
      'the task to complete',
      async () => (await ts.api('GET', `/api/tasks/${id}`)).body.status === 'completed',
    );
  });
});
