/**
 * Inputs that used to answer 500 or jam a lease (issue 11 point 7): deep JSON over HTTP and
 * WebSocket, integers beyond the safe range, non-canonical task ids, an update upload sent as
 * JSON, and client ids that differ only in case or trailing spaces.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../src/api/json-depth.js';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';

const nested = (depth: number, leaf = '1'): string => '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);

describe.each(DIALECTS)('malformed inputs (%s)', (dialect) => {
  let t: TestServer;
  let workerToken: string;
  const open: RawClient[] = [];

  beforeAll(async () => {
    t = await startTestServer(dialect);
    const r = await t.api('POST', '/api/tokens', { name: 'w', role: 'worker' });
    workerToken = r.body.token as string;
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await t?.stop();
  });

  const worker = async (id: string) => {
    const c = await registeredClient(t.server.wsUrl, workerToken, id, { max_tasks: 1 });
    open.push(c);
    return c;
  };
  const post = (path: string, text: string, contentType = 'application/json') =>
    fetch(t.url + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': contentType },
      body: text,
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
    }).then(async (res) => ({ status: res.status, body: (await res.json()) as any }));

  it('refuses JSON nested too deep in an HTTP body with 400, and takes it at the limit', async () => {
    const deep = `{"type":"command","requirements":{},"config":${nested(5000)}}`;
    const res = await post('/api/tasks', deep);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'too_deep' });
    expect(res.body.error.message).toMatch(String(MAX_JSON_DEPTH));
    // Brackets inside strings do not count.
    const fine = `{"type":"command","requirements":{},"config":{"s":"${'['.repeat(5000)}","n":${nested(MAX_JSON_DEPTH - 2)}}}`;
    const ok = await post('/api/tasks', fine);
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect((await t.api('GET', '/health')).status).toBe(200);
  });

  it('answers a task_progress nested too deep with an error frame and keeps the lease working', async () => {
    const id = `deep-${dialect}`;
    const w = await worker(id);
    // The worker takes the oldest pending task (the test above may have left one).
    await t.api('POST', '/api/tasks', { type: 'command', requirements: {}, config: {} });
    const task = await w.type('task', 15_000);
    const { id: taskId, attempt } = task.data as { id: number; attempt: number };
    // About 120 KB, well within the frame limit.
    const metrics = nested(20_000);
    w.send(
      `{"type":"task_progress","msg_id":"p0","task_id":${taskId},"attempt":${attempt},"progress":5,"metrics":${metrics}}`,
    );
    const err = await w.type('error', 15_000);
    expect(err).toMatchObject({ code: 'too_deep' });
    expect(String(err.message)).toMatch(/deeper than/);
    w.send({
      type: 'task_progress',
      msg_id: 'p1',
      task_id: taskId,
      attempt,
      progress: 50,
      metrics: { loss: 1 },
    });
    expect(await w.type('ack', 15_000)).toMatchObject({ reply_to: 'p1', of: 'task_progress' });
    w.send({ type: 'task_result', msg_id: 'r1', task_id: taskId, attempt, status: 'completed', metrics: {} });
    expect(await w.type('ack', 15_000)).toMatchObject({ reply_to: 'r1', of: 'task_result' });
    expect((await t.api('GET', `/api/tasks/${taskId}`)).body).toMatchObject({
      status: 'completed',
      progress: 100,
    });
    expect(w.closeCode).toBeNull();
  });

  it('answers offsets and limits beyond safe integers with 400', async () => {
    for (const path of ['/api/tasks', '/api/clients']) {
      for (const q of [
        'offset=100000000000000000000',
        'limit=100000000000000000000',
        'offset=9007199254740992',
      ]) {
        const res = await t.api('GET', `${path}?${q}`);
        expect(res.status, `${path}?${q}: ${JSON.stringify(res.body)}`).toBe(400);
        expect(res.body.error.code).toBe('validation_failed');
      }
      expect((await t.api('GET', `${path}?offset=0&limit=1`)).status).toBe(200);
    }
  });

  it('reads task ids only as canonical integers', async () => {
    const created = await t.api('POST', '/api/tasks', { type: 'command', requirements: {}, config: {} });
    expect(created.body.id).toBeGreaterThan(0);
    const first = (await t.api('GET', '/api/tasks?limit=1&offset=0')).body;
    expect(first.items.length).toBe(1);
    expect((await t.api('GET', `/api/tasks/1`)).status).toBe(200);
    for (const id of ['1.0', '0x1', '1e0', '01', '+1', '1%20', '%201']) {
      const res = await t.api('GET', `/api/tasks/${id}`);
      expect(res.status, `/api/tasks/${id}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error.code).toBe('validation_failed');
    }
    const model = await fetch(`${t.server.modelUrl}/tasks/0x1/model`, {
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    expect(model.status).toBe(400);
  });

  it('answers an update upload sent as JSON with 415', async () => {
    const res = await fetch(`${t.url}/api/tasks/1/rounds/1/updates/0?attempt=1&num_samples=1`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${workerToken}`,
        'content-type': 'application/json',
        'x-ai-farm-client': 'someone',
      },
      body: JSON.stringify({ weights: [1, 2, 3] }),
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type');
  });

  it('compares client ids exactly: case and trailing spaces make another client', async () => {
    const lower = await worker(`case-x-${dialect}`);
    const upper = await worker(`CASE-X-${dialect}`);
    const list = (await t.api('GET', '/api/clients?limit=500')).body.items as {
      id: string;
      connected: boolean;
      status: string;
    }[];
    const ours = list.filter((c) => c.id.toLowerCase() === `case-x-${dialect}`);
    expect(ours.map((c) => c.id).sort()).toEqual([`CASE-X-${dialect}`, `case-x-${dialect}`]);
    for (const c of ours) expect(c).toMatchObject({ connected: true, status: 'active' });
    expect((await t.api('GET', `/api/clients/case-x-${dialect}`)).body.id).toBe(`case-x-${dialect}`);
    expect((await t.api('GET', `/api/clients/CASE-X-${dialect}`)).body.id).toBe(`CASE-X-${dialect}`);
    expect((await t.api('GET', `/api/clients/Case-X-${dialect}`)).status).toBe(404);
    expect((await t.api('GET', `/api/clients/case-x-${dialect}%20`)).status).toBe(404);
    lower.close();
    upper.close();
  });
});
