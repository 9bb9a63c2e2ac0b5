import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { DIALECTS } from './helpers/db.js';
import { login } from './helpers/panel.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { RawClient, registeredClient } from './helpers/ws-client.js';
import { waitFor } from './helpers/wait.js';

/**
 * Revoking a token ends what it opened (issue 11, point 2): its WebSockets are closed with
 * 4001 within seconds, whatever they still send is refused, and their work goes back to
 * the queue. Through the API (told on the bus) and through `ai-farm tokens revoke` in
 * another process without Redis (found by the gateway's re-check of open sockets).
 */
describe.each(DIALECTS)('revoking a worker token on %s', (dialect) => {
  let t: TestServer;
  const sockets: RawClient[] = [];
  beforeAll(async () => {
    t = await startTestServer(dialect, { CONNECTION_TIMEOUT: 60 });
  }, 60_000);
  afterAll(async () => {
    for (const s of sockets) s.close();
    await t?.stop();
  });

  const token = async (name: string) => {
    const r = await t.api('POST', '/api/tokens', { name, role: 'worker' });
    expect(r.status).toBe(201);
    return r.body as { id: string; token: string };
  };
  const task = async (id: number) => (await t.api('GET', `/api/tasks/${id}`)).body;

  it('over the API: its sockets close with 4001, a forged result is refused, its task goes to another worker', async () => {
    const revoked = await token(`rev-api-${dialect}`);
    const other = await token(`rev-other-${dialect}`);
    const w = await registeredClient(t.server.wsUrl, revoked.token, `rev-w-${dialect}`);
    const idle = await RawClient.connect(t.server.wsUrl, revoked.token);
    sockets.push(w, idle);
    const created = await t.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      config: { command: 'true' },
    });
    expect(created.status).toBe(201);
    const id = created.body.id as number;
    const pushed = await w.next((m) => m.type === 'task' && (m.data as { id: number }).id === id, 20_000);
    expect(pushed.data).toMatchObject({ id, attempt: 1 });

    expect((await t.api('DELETE', `/api/tokens/${revoked.id}`)).status).toBe(200);
    // Sent after the revocation: before the fix this completed the task.
    w.send({ type: 'task_result', task_id: id, attempt: 1, status: 'completed', result: { forged: true } });
    expect(await w.closed(15_000)).toBe(4001);
    expect(w.closeReason).toMatch(/revoked/);
    expect(await idle.closed(15_000)).toBe(4001);
    await expect(RawClient.connect(t.server.wsUrl, revoked.token)).rejects.toThrow(/HTTP 401/);

    // Its lease went back at once (not after CONNECTION_TIMEOUT): another worker runs the task.
    await waitFor('the task back in the queue', async () => (await task(id)).status === 'pending', 20_000);
    const next = await registeredClient(t.server.wsUrl, other.token, `rev-next-${dialect}`);
    sockets.push(next);
    const again = await next.next((m) => m.type === 'task' && (m.data as { id: number }).id === id, 20_000);
    expect(again.data).toMatchObject({ id, attempt: 2 });
    const after = await task(id);
    expect(after.status).toBe('running');
    expect(after.result).toBeFalsy();
  });

  it('by `ai-farm tokens revoke` from another process (no Redis): its socket closes within seconds', async () => {
    const revoked = await token(`rev-cli-${dialect}`);
    const w = await registeredClient(t.server.wsUrl, revoked.token, `rev-cli-w-${dialect}`);
    sockets.push(w);
    const r = await runCli(['tokens', 'revoke', revoked.id], { DATABASE_URL: t.server.config.DATABASE_URL });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await w.closed(20_000)).toBe(4001);
    expect(w.closeReason).toMatch(/revoked/);
  });

  it('deleting a panel user ends its sessions, and its live event stream within seconds', async () => {
    const added = await t.api('POST', '/api/users', {
      username: `eve-${dialect}`,
      password: 'eve-password-1',
    });
    expect(added.status).toBe(201);
    const eve = await login(t.url, `eve-${dialect}`, 'eve-password-1');
    const stream = await fetch(`${t.url}/api/events`, { headers: { cookie: eve.cookie } });
    expect(stream.status).toBe(200);
    expect((await t.api('DELETE', `/api/users/${added.body.id}`)).status).toBe(204);
    expect((await eve.api('GET', '/api/tasks')).status).toBe(401);
    // The stream is re-checked on every tick of the panel's hub (5 s): it must end, not hang.
    const reader = stream.body!.getReader();
    const ended = Date.now() + 20_000;
    let done = false;
    while (!done && Date.now() < ended) {
      const chunk = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, ended - Date.now()))),
      ]);
      done = chunk === null ? false : chunk.done;
      if (chunk === null) break;
    }
    await reader.cancel().catch(() => {});
    expect(done).toBe(true);
  });
});
