import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { gatewayPerDescribe } from './helpers/gateway.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { RawClient, registeredClient, systemInfo } from './helpers/ws-client.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * The worker gateway's work with tasks: a task pushed, run and completed once, its output
 * lines, the client's hardware and a task's requirements, retries and lost leases, goodbye,
 * pause, resume, cancel, delete and cordon, the metrics all that leaves (the Prometheus series
 * of completed tasks), and multi-rank tasks. Malformed messages, limits and refusals:
 * gateway-connections.test.ts.
 */
describe.each(DIALECTS)('worker gateway on %s', (dialect) => {
  let t: TestServer;
  let workerToken: string;
  const { clients, connect, createTask, task } = gatewayPerDescribe(dialect, (s) => {
    ({ t, workerToken } = s);
  });

  it('registers, pushes a task, records progress and completes it exactly once', async () => {
    const w = await connect(`w-basic-${dialect}`);
    const { id } = await createTask({ name: 'basic' });
    const msg = await w.type('task');
    const data = msg.data as Record<string, unknown>;
    expect(data).toMatchObject({
      id,
      type: 'command',
      config: { command: 'true' },
      attempt: 1,
      rank: 0,
      world_size: 1,
    });
    expect((await task(id)).status).toBe('running');

    w.send({
      type: 'task_progress',
      msg_id: 'p1',
      task_id: String(id),
      progress: 40,
      metrics: { loss: 0.5 },
    });
    expect(await w.type('ack')).toMatchObject({ reply_to: 'p1', of: 'task_progress' });
    const running = await waitFor(
      'progress 40',
      async () => {
        const x = await task(id);
        return x.progress === 40 && x;
      },
      10_000,
    );
    expect(running.metrics).toEqual({ loss: 0.5 });

    w.send({
      type: 'task_result',
      msg_id: 'r1',
      task_id: id,
      status: 'completed',
      metrics: { loss: 0.1 },
      attempt: 1,
    });
    expect(await w.type('ack')).toMatchObject({ reply_to: 'r1', of: 'task_result', task_id: id });
    const done = await task(id);
    expect(done).toMatchObject({ status: 'completed', progress: 100, client_id: `w-basic-${dialect}` });
    expect(done.result.metrics).toEqual({ loss: 0.1 });

    // The client repeats itself (lost ack): counted once.
    w.send({ type: 'task_result', msg_id: 'r2', task_id: id, status: 'completed', metrics: {}, attempt: 1 });
    expect(await w.type('ack')).toMatchObject({ reply_to: 'r2', duplicate: true });
    const assignments = (await t.api('GET', `/api/tasks/${id}/assignments`)).body.items;
    expect(assignments).toHaveLength(1);
    expect(assignments[0]).toMatchObject({ status: 'completed', attempt: 1, rank: 0 });
    const metrics = (await t.api('GET', `/api/tasks/${id}/metrics`)).body;
    expect(metrics.items.length).toBeGreaterThanOrEqual(1);
    expect(metrics.items[0]).toMatchObject({ rank: 0, attempt: 1, progress: 40, metrics: { loss: 0.5 } });
    w.close();
  });

  it('keeps the output lines a worker sends for its task, and refuses lines for work it does not hold', async () => {
    const w = await connect(`w-log-${dialect}`, { ramGb: 130 });
    const { id } = await createTask({ requirements: { min_ram_gb: 125 } });
    await w.type('task');
    w.send({ type: 'task_log', msg_id: 'l1', task_id: id, attempt: 1, lines: ['epoch 1', 'loss 0.5'] });
    expect(await w.type('ack')).toMatchObject({ reply_to: 'l1', of: 'task_log' });
    w.send({ type: 'task_log', msg_id: 'l2', task_id: id, attempt: 7, lines: ['stale'] });
    expect(await w.type('error')).toMatchObject({ reply_to: 'l2', code: 'stale_attempt' });
    w.send({ type: 'task_log', msg_id: 'l3', task_id: id, lines: [] });
    expect(await w.type('error')).toMatchObject({ reply_to: 'l3', code: 'invalid_message' });
    const logs = (await t.api('GET', `/api/tasks/${id}/logs`)).body.items;
    expect(logs.map((l: { line: string }) => l.line)).toEqual(['epoch 1', 'loss 0.5']);
    expect(logs[0]).toMatchObject({ rank: 0, attempt: 1 });
    w.send({ type: 'task_result', task_id: id, status: 'completed', attempt: 1 });
    await w.type('ack');
    w.close();
  });

  it('stores the hardware in the seed columns and shows the client', async () => {
    const w = await connect(`w-hw-${dialect}`, { cores: 12, ramGb: 64, gpus: [24] });
    const c = (await t.api('GET', `/api/clients/w-hw-${dialect}`)).body;
    expect(c).toMatchObject({
      status: 'active',
      connected: true,
      cordoned: false,
      hostname: `host-w-hw-${dialect}`,
    });
    expect(c.cpu_info.cores_logical).toBe(12);
    expect(c.ram_info.total).toBe(64 * 2 ** 30);
    expect(c.gpu_info[0].memory.total).toBe(24 * 1024);
    w.close();
    await waitFor(
      'the client shown disconnected',
      async () => {
        const r = await t.api('GET', `/api/clients/w-hw-${dialect}`);
        return r.body.connected === false && r;
      },
      10_000,
    );
  });

  it('sends work only to a client that meets its requirements, and explains when none can', async () => {
    const small = await connect(`w-small-${dialect}`, { cores: 2, ramGb: 4 });
    const { id } = await createTask({ requirements: { min_cpu_cores: 48, min_ram_gb: 500 } });
    const why = await waitFor(
      'the reason it is unschedulable',
      async () => {
        const x = await task(id);
        return x.unschedulable_reason !== null && x;
      },
      10_000,
    );
    expect(why.status).toBe('pending');
    expect(why.unschedulable_reason).toMatch(/48 CPU cores, 500 GiB RAM/);
    const big = await connect(`w-big-${dialect}`, { cores: 64, ramGb: 512 });
    const msg = await big.type('task');
    expect((msg.data as { id: number }).id).toBe(id);
    expect(small.received.filter((m) => m.type === 'task')).toHaveLength(0);
    const running = await waitFor(
      'the task to run',
      async () => {
        const x = await task(id);
        return x.status === 'running' && x;
      },
      10_000,
    );
    expect(running.unschedulable_reason).toBeNull();
    big.send({ type: 'task_result', task_id: id, status: 'completed', attempt: 1 });
    await big.type('ack');
    small.close();
    big.close();
  });

  it('answers task_request with no_task when nothing fits', async () => {
    const w = await connect(`w-pull-${dialect}`);
    w.send({ type: 'task_request', client_id: `w-pull-${dialect}`, msg_id: 'q' });
    expect(await w.type('no_task')).toMatchObject({
      reply_to: 'q',
      reason: expect.stringMatching(/no pending task/),
    });
    w.close();
  });

  it('retries a failed attempt elsewhere and gives up after max_attempts with every attempt explained', async () => {
    const a = await connect(`w-fail-a-${dialect}`, { max_tasks: 1 });
    const { id } = await createTask({ max_attempts: 2, requirements: { min_ram_gb: 15 } });
    let m = await a.type('task');
    a.send({ type: 'task_result', task_id: id, status: 'failed', error_log: 'exit code 3', attempt: 1 });
    await a.type('ack');
    m = await a.type('task');
    expect((m.data as { attempt: number }).attempt).toBe(2);
    a.send({ type: 'task_result', task_id: id, status: 'failed', error_log: 'exit code 4', attempt: 2 });
    await a.type('ack');
    const failed = await waitFor(
      'the task to fail',
      async () => {
        const x = await task(id);
        return x.status === 'failed' && x;
      },
      10_000,
    );
    expect(failed.attempts).toBe(2);
    expect(failed.error_log).toMatch(/attempt 1 on w-fail-a.*exit code 3/);
    expect(failed.error_log).toMatch(/attempt 2 on w-fail-a.*exit code 4/);
    expect(failed.error_log).toMatch(/gave up after 2 of 2 attempts/);
    a.close();
  });

  it('releases the lease of a silent client, reassigns, and refuses the stale attempt', async () => {
    const a = await connect(`w-stale-a-${dialect}`, { ramGb: 100 });
    const { id } = await createTask({ requirements: { min_ram_gb: 90 } });
    await a.type('task');
    a.send({ type: 'task_progress', task_id: id, progress: 10, attempt: 1 });
    // The client disappears without a word (socket dropped); after CONNECTION_TIMEOUT its lease ends.
    a.close();
    const b = await connect(`w-stale-b-${dialect}`, { ramGb: 100 });
    const m = await b.type('task', 15_000);
    expect(m.data).toMatchObject({ id, attempt: 2 });
    // The first client comes back and reports on its old attempt: refused, not counted.
    const back = await connect(`w-stale-a-${dialect}`, { ramGb: 100 });
    back.send({ type: 'task_progress', msg_id: 's1', task_id: id, progress: 90, attempt: 1 });
    expect(await back.type('error')).toMatchObject({ reply_to: 's1', code: 'stale_attempt' });
    back.send({ type: 'task_result', msg_id: 's2', task_id: id, status: 'completed', attempt: 1 });
    expect(await back.type('error')).toMatchObject({ reply_to: 's2', code: 'stale_attempt' });
    expect((await task(id)).status).toBe('running');
    b.send({ type: 'task_result', task_id: id, status: 'completed', attempt: 2 });
    await b.type('ack');
    const done = await task(id);
    expect(done).toMatchObject({ status: 'completed', client_id: `w-stale-b-${dialect}`, attempts: 2 });
    expect(done.error_log).toMatch(/attempt 1 on w-stale-a.*silent/);
    const assignments = (await t.api('GET', `/api/tasks/${id}/assignments`)).body.items;
    expect(assignments.map((x: { status: string }) => x.status)).toEqual(['lost', 'completed']);
    back.close();
    b.close();
  });

  it('hands work back at once when a client says goodbye, and honours declared task types', async () => {
    const a = await connect(`w-bye-a-${dialect}`, { ramGb: 120 });
    const { id } = await createTask({ requirements: { min_ram_gb: 110 } });
    await a.type('task');
    const picky = await RawClient.connect(t.server.wsUrl, workerToken);
    clients.push(picky);
    picky.send({
      type: 'register',
      task_types: ['train_mnist'],
      ...systemInfo(`w-picky-${dialect}`, { ramGb: 120 }),
    });
    await picky.type('registered');
    const b = await connect(`w-bye-b-${dialect}`, { ramGb: 120 });
    a.ws.close(1000, 'bye');
    const m = await b.type('task');
    expect(m.data).toMatchObject({ id, attempt: 2 });
    expect(picky.received.filter((x) => x.type === 'task')).toHaveLength(0);
    b.send({ type: 'task_result', task_id: id, status: 'completed', attempt: 2 });
    await b.type('ack');
    // Handed back by the goodbye, not by CONNECTION_TIMEOUT (1.5 s) — which on a busy machine
    // could also come first, so the reason is checked rather than the time taken.
    expect((await task(id)).error_log).toMatch(/said goodbye/);
    expect((await task(id)).error_log).not.toMatch(/silent for/);
    b.close();
    picky.close();
  });

  it('pauses, resumes and cancels, and tells a reconnecting client its task is paused', async () => {
    const w = await connect(`w-ctl-${dialect}`, { ramGb: 200 });
    const { id } = await createTask({ requirements: { min_ram_gb: 150 } });
    await w.type('task');
    w.send({ type: 'task_progress', task_id: id, progress: 5, attempt: 1 });
    await waitFor(
      'progress 5',
      async () => {
        const x = await task(id);
        return x.progress === 5 && x;
      },
      10_000,
    );
    expect((await t.api('PUT', `/api/tasks/${id}/status`, { status: 'paused' })).body.status).toBe('paused');
    expect(await w.type('pause')).toEqual({ type: 'pause', task_id: id });
    // Reconnect while paused: the task comes back marked paused.
    w.close();
    const again = await connect(`w-ctl-${dialect}`, { ramGb: 200 });
    const re = await again.type('task');
    expect(re.data).toMatchObject({ id, attempt: 1, paused: true });
    expect((await t.api('PUT', `/api/tasks/${id}/status`, { status: 'running' })).body.status).toBe(
      'running',
    );
    expect(await again.type('resume')).toEqual({ type: 'resume', task_id: id });
    expect((await t.api('PUT', `/api/tasks/${id}/status`, { status: 'cancelled' })).body.status).toBe(
      'cancelled',
    );
    expect(await again.type('stop')).toEqual({ type: 'stop', task_id: id });
    const a = (await t.api('GET', `/api/tasks/${id}/assignments`)).body.items;
    expect(a[0].status).toBe('cancelled');
    // A late result for the cancelled work changes nothing.
    again.send({ type: 'task_result', msg_id: 'late', task_id: id, status: 'completed', attempt: 1 });
    expect(await again.type('error')).toMatchObject({ reply_to: 'late', code: 'stale_attempt' });
    expect((await task(id)).status).toBe('cancelled');
    again.close();
  });

  it('stops a task before deleting it', async () => {
    const w = await connect(`w-del-${dialect}`, { ramGb: 300 });
    const { id } = await createTask({ requirements: { min_ram_gb: 250 } });
    await w.type('task');
    expect((await t.api('DELETE', `/api/tasks/${id}`)).status).toBe(204);
    expect(await w.type('stop')).toEqual({ type: 'stop', task_id: id });
    w.close();
  });

  it('cordons a client: no new work goes to it', async () => {
    const w = await connect(`w-cordon-${dialect}`, { ramGb: 400 });
    const put = await t.api('PUT', `/api/clients/w-cordon-${dialect}/status`, { status: 'inactive' });
    expect(put.body).toMatchObject({ status: 'inactive', cordoned: true });
    const { id } = await createTask({ requirements: { min_ram_gb: 350 } });
    await sleep(300);
    expect(w.received.filter((m) => m.type === 'task')).toHaveLength(0);
    await t.api('PUT', `/api/clients/w-cordon-${dialect}/status`, { status: 'active' });
    expect(((await w.type('task')).data as { id: number }).id).toBe(id);
    w.send({ type: 'task_result', task_id: id, status: 'completed', attempt: 1 });
    await w.type('ack');
    w.close();
  });

  it('reports the seed metrics object and Prometheus metrics', async () => {
    const w = await connect(`w-metrics-${dialect}`);
    w.send({
      type: 'heartbeat',
      utilization: {
        cpu_utilization: 40,
        ram_utilization: 60,
        gpu_utilization: [{ id: 0, utilization: 80, memory_used: 4096 }],
      },
    });
    await w.type('heartbeat_ack');
    const m = (await t.api('GET', '/api/metrics')).body;
    expect(m).toMatchObject({
      cpu_utilization: expect.any(Number),
      ram_utilization: expect.any(Number),
      gpu_utilization: [],
      active_tasks: expect.any(Number),
      connected_clients: expect.any(Number),
    });
    expect(m.farm.gpu_utilization).toContainEqual({
      client_id: `w-metrics-${dialect}`,
      id: 0,
      utilization: 80,
      memory_used: 4096,
    });
    const prom = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    const text = await prom.text();
    for (const name of [
      'aifarm_connected_clients',
      'aifarm_tasks{status="completed"}',
      'aifarm_dispatch_latency_seconds_bucket',
      'aifarm_ws_messages_total',
      'aifarm_errors_total',
    ]) {
      expect(text).toContain(name);
    }
    expect((await fetch(`${t.url}/metrics`)).status).toBe(401);
    w.close();
  });
});

describe('multi-rank tasks on sqlite', () => {
  let t: TestServer;
  let token: string;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    t = await startTestServer('sqlite', { CONNECTION_TIMEOUT: 1 });
    token = (await t.api('POST', '/api/tokens', { name: 'w', role: 'worker' })).body.token;
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.stop();
  });

  it('places every rank on a distinct client, re-places a lost rank alone, and completes when all ranks do', async () => {
    const a = await registeredClient(t.server.wsUrl, token, 'gang-a');
    clients.push(a);
    const { body } = await t.api('POST', '/api/tasks', { type: 'command', requirements: {}, world_size: 2 });
    expect(body.world_size).toBe(2);
    await sleep(200);
    expect(a.received.filter((m) => m.type === 'task')).toHaveLength(0);
    const b = await registeredClient(t.server.wsUrl, token, 'gang-b');
    clients.push(b);
    const ta = (await a.type('task')).data as { rank: number; attempt: number };
    const tb = (await b.type('task')).data as { rank: number; attempt: number };
    expect(new Set([ta.rank, tb.rank])).toEqual(new Set([0, 1]));
    // b vanishes; its rank alone moves to c, with that rank's next attempt.
    b.close();
    const c = await registeredClient(t.server.wsUrl, token, 'gang-c');
    clients.push(c);
    const tc = (await c.type('task', 15_000)).data as { rank: number; attempt: number };
    expect(tc).toMatchObject({ rank: tb.rank, attempt: 2 });
    a.send({ type: 'task_result', task_id: body.id, status: 'completed', attempt: ta.attempt });
    await a.type('ack');
    expect((await t.api('GET', `/api/tasks/${body.id}`)).body.status).toBe('running');
    c.send({ type: 'task_result', task_id: body.id, status: 'completed', attempt: 2 });
    await c.type('ack');
    const done = (await t.api('GET', `/api/tasks/${body.id}`)).body;
    expect(done.status).toBe('completed');
    const rows = (await t.api('GET', `/api/tasks/${body.id}/assignments`)).body.items;
    expect(
      rows.map((r: { rank: number; attempt: number; status: string }) => [r.rank, r.attempt, r.status]),
    ).toEqual([
      [0, 1, tb.rank === 0 ? 'lost' : 'completed'],
      ...(tb.rank === 0 ? [[0, 2, 'completed']] : []),
      [1, 1, tb.rank === 1 ? 'lost' : 'completed'],
      ...(tb.rank === 1 ? [[1, 2, 'completed']] : []),
    ]);
  });
});
