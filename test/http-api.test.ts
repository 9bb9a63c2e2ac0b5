import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/api-client.js';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';

describe.each(DIALECTS)('HTTP API on %s', (dialect) => {
  let t: TestServer;
  let userToken: string;
  let otherUserToken: string;
  let workerToken: string;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    const mk = async (name: string, role: string) => {
      const r = await t.api('POST', '/api/tokens', { name, role });
      expect(r.status).toBe(201);
      return r.body.token as string;
    };
    userToken = await mk('alice', 'user');
    otherUserToken = await mk('bob', 'user');
    workerToken = await mk('worker-1', 'worker');
  });
  afterAll(async () => t?.stop());

  const task = (over: Record<string, unknown> = {}) => ({
    type: 'command',
    requirements: { min_cpu_cores: 1, min_ram_gb: 0.5 },
    config: { command: 'echo hi' },
    ...over,
  });

  it('serves health and readiness without a token', async () => {
    expect((await t.api('GET', '/health', undefined, null)).body).toEqual({ status: 'ok' });
    expect((await t.api('GET', '/ready', undefined, null)).body).toEqual({ status: 'ready', database: 'ok' });
  });

  it('serves the OpenAPI document and docs without a token', async () => {
    const doc = await t.api('GET', '/openapi.json', undefined, null);
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    for (const p of [
      '/api/tasks',
      '/api/tasks/{id}',
      '/api/tasks/{id}/status',
      '/api/clients',
      '/api/clients/{id}',
    ]) {
      expect(Object.keys(doc.body.paths)).toContain(p);
    }
    const docs = await fetch(`${t.url}/docs/`);
    expect(docs.status).toBe(200);
  });

  it('creates a task with status pending and snake_case fields', async () => {
    const r = await t.api('POST', '/api/tasks', task({ priority: 5, name: 'hello' }), userToken);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      type: 'command',
      status: 'pending',
      priority: 5,
      name: 'hello',
      requirements: { min_cpu_cores: 1, min_ram_gb: 0.5 },
      config: { command: 'echo hi' },
      client_id: null,
      result: null,
      error_log: null,
      checkpoint_path: null,
      created_by: 'alice',
    });
    expect(r.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const got = await t.api('GET', `/api/tasks/${r.body.id}`, undefined, userToken);
    // The scheduler may note meanwhile that no client could run it yet.
    const { unschedulable_reason: _a, updated_at: _b, ...created } = r.body;
    expect(got.body).toMatchObject(created);
  });

  it('lists with filters and pagination and says how many there are', async () => {
    for (let i = 0; i < 4; i++) await t.api('POST', '/api/tasks', task({ type: 'pager' }), userToken);
    const page = await t.api('GET', '/api/tasks?type=pager&limit=3&offset=0', undefined, userToken);
    expect(page.status).toBe(200);
    expect(page.body.total).toBe(4);
    expect(page.body.items).toHaveLength(3);
    expect(page.body).toMatchObject({ limit: 3, offset: 0 });
    const rest = await t.api('GET', '/api/tasks?type=pager&limit=3&offset=3', undefined, userToken);
    expect(rest.body.items).toHaveLength(1);
    const pending = await t.api('GET', '/api/tasks?status=pending&type=pager', undefined, userToken);
    expect(pending.body.total).toBe(4);
    const none = await t.api('GET', '/api/tasks?status=completed&type=pager', undefined, userToken);
    expect(none.body.total).toBe(0);
    const byClient = await t.api('GET', '/api/tasks?client_id=nobody', undefined, userToken);
    expect(byClient.body.total).toBe(0);
  });

  it('creates up to 1,000 tasks in one request (POST /api/tasks/batch), all or none', async () => {
    const tasks = Array.from({ length: 1000 }, (_, i) =>
      task({ type: 'batch', name: `b${i}`, priority: i % 3 }),
    );
    const r = await t.api('POST', '/api/tasks/batch', { tasks }, userToken);
    expect(r.status).toBe(201);
    const ids = r.body.ids as number[];
    expect(ids).toHaveLength(1000);
    expect(new Set(ids).size).toBe(1000);
    // Ids come back in the order the tasks were given.
    for (const i of [0, 1, 499, 500, 999]) {
      const got = await t.api('GET', `/api/tasks/${ids[i]}`, undefined, userToken);
      expect(got.body).toMatchObject({
        id: ids[i],
        name: `b${i}`,
        priority: i % 3,
        status: 'pending',
        created_by: 'alice',
        config: { command: 'echo hi' },
      });
    }
    const events = await t.api('GET', `/api/tasks/${ids[999]}/events`, undefined, userToken);
    expect(events.body.items.map((e: { kind: string }) => e.kind)).toEqual(['created']);
    const count = async () =>
      (await t.api('GET', '/api/tasks?type=batch&limit=1', undefined, userToken)).body.total as number;
    expect(await count()).toBe(1000);

    // Refused whole: too many, none, one malformed task, one bad training config.
    const tooMany = await t.api('POST', '/api/tasks/batch', { tasks: [...tasks, task()] }, userToken);
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.code).toBe('validation_failed');
    const empty = await t.api('POST', '/api/tasks/batch', { tasks: [] }, userToken);
    expect(empty.status).toBe(400);
    const malformed = await t.api(
      'POST',
      '/api/tasks/batch',
      { tasks: [task({ type: 'batch' }), task({ type: 'batch', requirements: { cores: 2 } })] },
      userToken,
    );
    expect(malformed.status).toBe(400);
    const badTraining = await t.api(
      'POST',
      '/api/tasks/batch',
      { tasks: [task({ type: 'batch' }), task({ type: 'batch', config: { rounds: -1 } })] },
      userToken,
    );
    expect(badTraining.status).toBe(400);
    expect(badTraining.body.error.message).toMatch(/^tasks\[1\]: /);
    expect(await count()).toBe(1000);
    // Workers may not create tasks.
    const worker = await t.api('POST', '/api/tasks/batch', { tasks: [task()] }, workerToken);
    expect(worker.status).toBe(403);
  });

  it('follows the state machine and names the allowed changes on 409', async () => {
    const { body } = await t.api('POST', '/api/tasks', task(), userToken);
    const bad = await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'completed' }, userToken);
    expect(bad.status).toBe(409);
    expect(bad.body.error.code).toBe('illegal_transition');
    expect(bad.body.error.details.allowed).toEqual(['paused', 'cancelled']);
    const paused = await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'paused' }, userToken);
    expect(paused.status).toBe(200);
    expect(paused.body.status).toBe('paused');
    // Nothing runs it, so resuming puts it back in the queue.
    const resumed = await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'running' }, userToken);
    expect(resumed.body.status).toBe('pending');
    const cancelled = await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'cancelled' }, userToken);
    expect(cancelled.body.status).toBe('cancelled');
    expect(cancelled.body.finished_at).not.toBeNull();
    const retried = await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'pending' }, userToken);
    expect(retried.body).toMatchObject({ status: 'pending', finished_at: null, attempts: 0 });
    const events = await t.api('GET', `/api/tasks/${body.id}/events`, undefined, userToken);
    expect(events.body.items.map((e: { kind: string }) => e.kind)).toEqual([
      'pending',
      'cancelled',
      'pending',
      'paused',
      'created',
    ]);
  });

  it("pages a task's events, newest first: limit, then before the last id", async () => {
    const { body } = await t.api('POST', '/api/tasks', task(), userToken);
    for (const status of ['paused', 'running', 'cancelled', 'pending'])
      expect((await t.api('PUT', `/api/tasks/${body.id}/status`, { status }, userToken)).status).toBe(200);
    const url = `/api/tasks/${body.id}/events`;
    const all = (await t.api('GET', url, undefined, userToken)).body.items as { id: number; kind: string }[];
    expect(all).toHaveLength(5);
    const first = (await t.api('GET', `${url}?limit=2`, undefined, userToken)).body.items;
    expect(first).toEqual(all.slice(0, 2));
    const next = await t.api('GET', `${url}?limit=2&before=${first[1].id}`, undefined, userToken);
    expect(next.body.items).toEqual(all.slice(2, 4));
    const last = await t.api('GET', `${url}?before=${next.body.items[1].id}`, undefined, userToken);
    expect(last.body.items.map((e: { kind: string }) => e.kind)).toEqual(['created']);
    // The SDK asks the same way.
    const sdk = new ApiClient({ baseUrl: t.url, token: userToken });
    expect(await sdk.tasks.events(body.id, { limit: 2, before: first[1].id })).toEqual(all.slice(2, 4));
    for (const bad of ['limit=0', 'limit=1001', 'before=0', 'before=x', 'after=3']) {
      const res = await t.api('GET', `${url}?${bad}`, undefined, userToken);
      expect(res.status, bad).toBe(400);
      expect(res.body.error.message, bad).toMatch(/querystring/);
    }
  });

  it('deletes a task, then answers 404', async () => {
    const { body } = await t.api('POST', '/api/tasks', task(), userToken);
    expect((await t.api('DELETE', `/api/tasks/${body.id}`, undefined, userToken)).status).toBe(204);
    const gone = await t.api('GET', `/api/tasks/${body.id}`, undefined, userToken);
    expect(gone.status).toBe(404);
    expect(gone.body.error.code).toBe('task_not_found');
    expect((await t.api('DELETE', `/api/tasks/${body.id}`, undefined, userToken)).status).toBe(404);
    expect((await t.api('PUT', `/api/tasks/${body.id}/status`, { status: 'paused' }, userToken)).status).toBe(
      404,
    );
  });

  it.each([
    [{ requirements: {} }, /required field 'type'/],
    [{ type: 'x' }, /required field 'requirements'/],
    [{ type: '', requirements: {} }, /body\/type/],
    [
      { type: 'x', requirements: { min_cpu_cores: '2' } },
      /body\/requirements\/min_cpu_cores must be integer/,
    ],
    [{ type: 'x', requirements: { min_cpu_cores: 0 } }, /min_cpu_cores must be >= 1/],
    [{ type: 'x', requirements: {}, priority: 1.5 }, /body\/priority must be integer/],
    [{ type: 'x', requirements: {}, config: [1, 2] }, /body\/config/],
    [{ type: 'x', requirements: {}, extra: 1 }, /unknown field 'extra'/],
    [{ type: 'x', requirements: 'gpu' }, /body\/requirements/],
  ])('refuses a bad body %j with 400 naming the field', async (body, message) => {
    const r = await t.api('POST', '/api/tasks', body, userToken);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('validation_failed');
    expect(r.body.error.message).toMatch(message);
  });

  it('refuses malformed JSON, wrong media types and oversize bodies', async () => {
    const bad = await t.api('POST', '/api/tasks', '{"type": ', userToken);
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_json');
    const media = await fetch(`${t.url}/api/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${userToken}`, 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(media.status).toBe(415);
    expect(((await media.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type');
    const huge = { type: 'x', requirements: {}, config: { blob: 'a'.repeat(2 * 1024 * 1024) } };
    const big = await t.api('POST', '/api/tasks', huge, userToken);
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('body_too_large');
  });

  it('validates parameters and queries', async () => {
    expect((await t.api('GET', '/api/tasks/abc', undefined, userToken)).body.error.message).toMatch(
      /params\/id/,
    );
    expect((await t.api('GET', '/api/tasks/0', undefined, userToken)).status).toBe(400);
    const q = await t.api('GET', '/api/tasks?status=sleeping', undefined, userToken);
    expect(q.status).toBe(400);
    expect(q.body.error.message).toMatch(/querystring\/status/);
    expect((await t.api('GET', '/api/tasks?limit=100000', undefined, userToken)).status).toBe(400);
    expect((await t.api('GET', '/api/tasks?bogus=1', undefined, userToken)).status).toBe(400);
    const status = await t.api('PUT', '/api/tasks/1/status', { status: 'done' }, userToken);
    expect(status.status).toBe(400);
  });

  it('needs a valid token everywhere but health and docs', async () => {
    for (const [method, path] of [
      ['GET', '/api/tasks'],
      ['POST', '/api/tasks'],
      ['GET', '/api/tasks/1'],
      ['PUT', '/api/tasks/1/status'],
      ['DELETE', '/api/tasks/1'],
      ['GET', '/api/clients'],
      ['GET', '/api/clients/x'],
      ['PUT', '/api/clients/x/status'],
      ['GET', '/api/tokens'],
      ['GET', '/api/nothing-here'],
    ] as const) {
      const none = await t.api(method, path, undefined, null);
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.body.error.code).toBe('unauthorized');
      const wrong = await t.api(method, path, undefined, 'afm_not-a-real-token');
      expect(wrong.status, `${method} ${path}`).toBe(401);
    }
  });

  it('keeps worker tokens off task and client management', async () => {
    for (const [method, path] of [
      ['GET', '/api/tasks'],
      ['POST', '/api/tasks'],
      ['GET', '/api/clients'],
      ['PUT', '/api/clients/x/status'],
      ['GET', '/api/tokens'],
    ] as const) {
      const r = await t.api(method, path, method === 'GET' ? undefined : {}, workerToken);
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.error.code).toBe('forbidden');
    }
  });

  it("shows a user only the tasks it created, and 404 for another's", async () => {
    const mine = await t.api('POST', '/api/tasks', task({ type: 'private' }), otherUserToken);
    const list = await t.api('GET', '/api/tasks?type=private', undefined, userToken);
    expect(list.body.total).toBe(0);
    expect((await t.api('GET', `/api/tasks/${mine.body.id}`, undefined, userToken)).status).toBe(404);
    expect((await t.api('DELETE', `/api/tasks/${mine.body.id}`, undefined, userToken)).status).toBe(404);
    expect((await t.api('GET', `/api/tasks/${mine.body.id}`, undefined, otherUserToken)).status).toBe(200);
    // Admins see everything.
    expect((await t.api('GET', `/api/tasks/${mine.body.id}`)).status).toBe(200);
  });

  it('creates, lists and revokes tokens; a revoked token stops working', async () => {
    const created = await t.api('POST', '/api/tokens', { name: 'temp', role: 'user' });
    expect(created.body.token).toMatch(/^afm_/);
    expect((await t.api('GET', '/api/tasks', undefined, created.body.token)).status).toBe(200);
    const list = await t.api('GET', '/api/tokens');
    expect(JSON.stringify(list.body)).not.toContain(created.body.token);
    expect(list.body.items.map((x: { name: string }) => x.name)).toContain('temp');
    const revoked = await t.api('DELETE', `/api/tokens/${created.body.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revoked_at).not.toBeNull();
    expect((await t.api('GET', '/api/tasks', undefined, created.body.token)).status).toBe(401);
    expect((await t.api('DELETE', `/api/tokens/${created.body.id}`)).status).toBe(409);
    expect((await t.api('DELETE', '/api/tokens/tok_nope')).status).toBe(404);
    expect((await t.api('POST', '/api/tokens', { name: 'x', role: 'root' })).status).toBe(400);
    expect((await t.api('POST', '/api/tokens', { name: 'n', role: 'user' }, userToken)).status).toBe(403);
  });

  it('lists clients and answers 404 for an unknown one', async () => {
    const list = await t.api('GET', '/api/clients', undefined, userToken);
    expect(list.status).toBe(200);
    expect(list.body).toMatchObject({ items: [], total: 0 });
    const one = await t.api('GET', '/api/clients/ghost', undefined, userToken);
    expect(one.status).toBe(404);
    expect(one.body.error.code).toBe('client_not_found');
    const put = await t.api('PUT', '/api/clients/ghost/status', { status: 'inactive' });
    expect(put.status).toBe(404);
    const bad = await t.api('PUT', '/api/clients/ghost/status', { status: 'asleep' });
    expect(bad.status).toBe(400);
  });
});
