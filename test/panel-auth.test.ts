import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { login, parse, postLogin, readEvents } from './helpers/panel.js';
import { startServer } from '../src/main.js';
import { runCli } from './clients/processes.js';
import { startTestServer, testConfig, type TestServer } from './helpers/server.js';

const PASSWORD = 'correct horse battery';
const task = { type: 'command', requirements: { min_cpu_cores: 1 }, config: { command: 'echo hi' } };

describe.each(DIALECTS)('admin-panel login and sessions on %s', (dialect) => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer(dialect, { ADMIN_PASSWORD: PASSWORD });
  });
  afterAll(async () => t?.stop());

  it('creates the first admin from ADMIN_USERNAME/ADMIN_PASSWORD and prints nothing', async () => {
    expect(t.server.createdAdminPassword).toBeUndefined();
    const users = await t.api('GET', '/api/users');
    expect(users.status).toBe(200);
    expect(users.body.items).toEqual([expect.objectContaining({ username: 'admin', role: 'admin' })]);
    expect(JSON.stringify(users.body)).not.toContain('scrypt');
  });

  it('logs in with an httpOnly, SameSite=Strict cookie and a CSRF token', async () => {
    const s = await login(t.url, 'Admin', PASSWORD);
    expect(s.setCookie).toMatch(/^aifarm_session=[A-Za-z0-9_-]{40,};/);
    expect(s.setCookie).toContain('HttpOnly');
    expect(s.setCookie).toContain('SameSite=Strict');
    // Plain HTTP here: a Secure cookie would never come back.
    expect(s.setCookie).not.toContain('Secure');
    expect(s.csrf).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const me = await s.api('GET', '/api/session');
    expect(me.body).toMatchObject({ kind: 'session', username: 'admin', role: 'admin', csrf_token: s.csrf });
    expect((await s.api('GET', '/api/tasks', undefined, { csrf: false })).status).toBe(200);
  });

  it('refuses a wrong password and an unknown user alike', async () => {
    const wrong = await postLogin(t.url, 'admin', 'not the password');
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toMatchObject({
      code: 'invalid_credentials',
      message: 'wrong username or password',
    });
    expect(wrong.headers.get('set-cookie')).toBeNull();
    const unknown = await postLogin(t.url, 'nobody', 'not the password');
    expect(unknown.status).toBe(401);
    expect(unknown.body.error.message).toBe(wrong.body.error.message);
  });

  it('refuses a login posted from another site (login CSRF), and takes one from its own page', async () => {
    const foreignHeaders: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      { 'sec-fetch-site': 'cross-site' },
    ];
    for (const headers of foreignHeaders) {
      const foreign = await postLogin(t.url, 'admin', PASSWORD, headers);
      expect(foreign.status).toBe(403);
      expect(foreign.body.error.code).toBe('origin_forbidden');
      expect(foreign.headers.get('set-cookie')).toBeNull();
    }
    const own = await postLogin(t.url, 'admin', PASSWORD, { origin: t.url, 'sec-fetch-site': 'same-origin' });
    expect(own.status).toBe(200);
  });

  it('refuses a change made with the cookie but without the CSRF token (403)', async () => {
    const s = await login(t.url, 'admin', PASSWORD);
    const missing = await s.api('POST', '/api/tasks', task, { csrf: false });
    expect(missing.status).toBe(403);
    expect(missing.body.error.code).toBe('csrf_token_invalid');
    const forged = await s.api('POST', '/api/tasks', task, { csrf: 'x'.repeat(43) });
    expect(forged.status).toBe(403);
    const ok = await s.api('POST', '/api/tasks', task);
    expect(ok.status).toBe(201);
    expect(ok.body.created_by).toBe('admin');
    // Bearer-token callers are not exposed to CSRF and need no token.
    expect((await t.api('POST', '/api/tasks', task)).status).toBe(201);
  });

  it('refuses requests without a session or token (401), and a made-up cookie', async () => {
    const none = await parse(await fetch(`${t.url}/api/tasks`));
    expect(none.status).toBe(401);
    const fake = await parse(
      await fetch(`${t.url}/api/tasks`, { headers: { cookie: 'aifarm_session=' + 'A'.repeat(43) } }),
    );
    expect(fake.status).toBe(401);
    expect(fake.body.error.message).toMatch(/log in again/);
  });

  it('logs out: the cookie is cleared and the session no longer works', async () => {
    const s = await login(t.url, 'admin', PASSWORD);
    const out = await s.api('DELETE', '/api/session');
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toMatch(/aifarm_session=;.*Max-Age=0/);
    expect((await s.api('GET', '/api/tasks')).status).toBe(401);
  });

  it('manages users: add, refuse duplicates and weak passwords, change passwords, delete', async () => {
    const s = await login(t.url, 'admin', PASSWORD);
    const added = await s.api('POST', '/api/users', { username: 'Carol', password: 'carol-password' });
    expect(added.status).toBe(201);
    expect(added.body).toMatchObject({ username: 'carol', role: 'admin' });
    expect((await s.api('POST', '/api/users', { username: 'carol', password: 'whatever-else' })).status).toBe(
      409,
    );
    const weak = await s.api('POST', '/api/users', { username: 'dave', password: 'short' });
    expect(weak.status).toBe(400);
    expect(weak.body.error.details.fields).toEqual(['body/password']);

    const carol = await login(t.url, 'carol', 'carol-password');
    expect((await carol.api('GET', '/api/tasks')).status).toBe(200);
    // An admin resets carol's password: carol's sessions end.
    const reset = await s.api('PUT', `/api/users/${added.body.id}/password`, {
      password: 'carol-new-password',
    });
    expect(reset.status).toBe(200);
    expect((await carol.api('GET', '/api/tasks')).status).toBe(401);
    expect((await postLogin(t.url, 'carol', 'carol-password')).status).toBe(401);
    const carol2 = await login(t.url, 'carol', 'carol-new-password');

    // Changing one's own password needs the current one, and keeps this session.
    const me = carol2;
    const noCurrent = await me.api('PUT', `/api/users/${added.body.id}/password`, {
      password: 'carol-third-pw',
    });
    expect(noCurrent.status).toBe(400);
    expect(noCurrent.body.error.code).toBe('wrong_password');
    const own = await me.api('PUT', `/api/users/${added.body.id}/password`, {
      password: 'carol-third-pw',
      current_password: 'carol-new-password',
    });
    expect(own.status).toBe(200);
    expect((await me.api('GET', '/api/tasks')).status).toBe(200);

    expect((await me.api('DELETE', `/api/users/${added.body.id}`)).status).toBe(409);
    expect((await s.api('DELETE', `/api/users/${added.body.id}`)).status).toBe(204);
    expect((await me.api('GET', '/api/tasks')).status).toBe(401);
    const users = await s.api('GET', '/api/users');
    expect(users.body.items.map((u: { username: string }) => u.username)).toEqual(['admin']);
  });

  it('streams task changes and the overview as Server-Sent Events, to sessions and tokens', async () => {
    expect((await fetch(`${t.url}/api/events`)).status).toBe(401);
    const s = await login(t.url, 'admin', PASSWORD);
    const res = await fetch(`${t.url}/api/events`, { headers: { cookie: s.cookie } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const created = s.api('POST', '/api/tasks', { ...task, name: 'streamed' });
    const events = await readEvents(res, (ev) =>
      ev.some((e) => e.event === 'task' && (e.data as { task_id: number }).task_id > 0),
    );
    const id = (await created).body.id;
    const first = events[0];
    expect(first?.event).toBe('overview');
    expect(first?.data).toMatchObject({ full: true, tasks: { total: expect.any(Number) } });
    expect(events).toContainEqual({ event: 'task', data: { task_id: id, status: 'pending' } });

    const byToken = await fetch(`${t.url}/api/events`, {
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    const tokEvents = await readEvents(byToken, (ev) => ev.length > 0);
    expect(tokEvents[0]?.event).toBe('overview');
    const overview = await t.api('GET', '/api/overview');
    expect(overview.body.metrics).toMatchObject({ active_tasks: 0, connected_clients: 0 });
  });

  it('serves the panel shell publicly with a strict CSP, and keeps API 404s as JSON', async () => {
    const home = await fetch(`${t.url}/`);
    expect([200, 503]).toContain(home.status);
    expect(home.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(home.headers.get('x-frame-options')).toBe('DENY');
    const deep = await fetch(`${t.url}/tasks/12`);
    expect(deep.status).toBe(home.status);
    // Unknown API paths: 401 to strangers like every API path, a JSON 404 to the authenticated.
    expect((await parse(await fetch(`${t.url}/api/nothing-here`))).status).toBe(401);
    const api404 = await t.api('GET', '/api/nothing-here');
    expect(api404.status).toBe(404);
    expect(api404.body.error.code).toBe('route_not_found');
    expect((await fetch(`${t.url}/assets/missing-file.js`)).status).toBe(404);
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });
});

describe('first start without ADMIN_PASSWORD', () => {
  it('generates a password once, never logs it, and keeps it across restarts', async () => {
    const t = await startTestServer('sqlite');
    try {
      const pw = t.server.createdAdminPassword;
      expect(pw).toMatch(/^[A-Za-z0-9_-]{20}$/);
      await login(t.url, 'admin', pw as string);
      const logs = ['server.log', 'error.log', 'access.log']
        .map((f) => {
          try {
            return readFileSync(join(t.db.dir, 'logs', f), 'utf8');
          } catch {
            return '';
          }
        })
        .join('');
      expect(logs).toContain('first admin user created');
      expect(logs).not.toContain(pw);
      // A restart on the same database creates nothing and prints nothing.
      await t.server.stop();
      const again = await startServer(testConfig(t.db, { ADMIN_TOKEN: t.adminToken }));
      try {
        expect(again.createdAdminPassword).toBeUndefined();
        await login(again.httpUrl, 'admin', pw as string);
      } finally {
        await again.stop();
      }
    } finally {
      await t.stop();
    }
  });
});

describe('ai-farm users (the command line)', () => {
  it('adds users and changes passwords, ending the old sessions', async () => {
    const t = await startTestServer('sqlite', { ADMIN_PASSWORD: PASSWORD });
    const env = { DATABASE_URL: t.db.url, LOG_DIR: join(t.db.dir, 'cli-logs') };
    const shown = (out: string) => /shown this once:\n(\S+)/.exec(out)?.[1] as string;
    try {
      const add = await runCli(['users', 'add', 'Eve', '--generate'], env);
      expect(add.code, add.stderr).toBe(0);
      expect(add.stdout).toContain('added user eve');
      const first = shown(add.stdout);
      const eve = await login(t.url, 'eve', first);

      const passwd = await runCli(['users', 'passwd', 'eve', '--generate'], env);
      expect(passwd.code, passwd.stderr).toBe(0);
      const second = shown(passwd.stdout);
      expect(second).not.toBe(first);
      expect((await eve.api('GET', '/api/tasks')).status).toBe(401);
      expect((await postLogin(t.url, 'eve', first)).status).toBe(401);
      await login(t.url, 'eve', second);

      const list = await runCli(['users', 'list', '--json'], env);
      expect(JSON.parse(list.stdout).map((u: { username: string }) => u.username)).toEqual(['admin', 'eve']);
      // A weak password (here: empty standard input) is refused; so is an unknown user.
      const weak = await runCli(['users', 'add', 'mallory', '--password-stdin'], env);
      expect(weak.code).toBe(1);
      expect(weak.stderr).toMatch(/password must be 8 to 1024 characters/);
      expect((await runCli(['users', 'passwd', 'nobody', '--generate'], env)).code).toBe(1);
    } finally {
      await t.stop();
    }
  });
});
