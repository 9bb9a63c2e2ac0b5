import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sql } from 'kysely';
import { beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** What LOG_DIR holds after a server has answered a known set of requests, then stopped. */
describe.each(DIALECTS)('log files on %s', (dialect) => {
  let t: TestServer;
  let userToken: string;
  const guessed = 'afm_' + 'g'.repeat(43);
  let logs: Record<'server' | 'error' | 'access', string>;
  let sent: { method: string; path: string; status: number }[];
  let internal: { status: number; body: { error: { code: string; message: string } } };

  beforeAll(async () => {
    t = await startTestServer(dialect);
    sent = [];
    const call = async (method: string, url: string, body?: unknown, token?: string | null) => {
      const r = await t.api(method, url, body, token);
      sent.push({ method, path: url.split('?')[0] as string, status: r.status });
      return r;
    };
    userToken = (await call('POST', '/api/tokens', { name: 'logger', role: 'user' })).body.token as string;
    await call('GET', '/health', undefined, null);
    await call('POST', '/api/tasks', { type: 'logged', requirements: {} }, userToken);
    await call('GET', '/api/tasks?status=pending', undefined, userToken);
    // A token in the query string as well as in the header: neither may reach a log.
    await call('GET', `/api/tasks?token=${userToken}`, undefined, userToken);
    await call('GET', `/api/clients?access_token=${userToken}`, undefined, guessed);
    await call('GET', '/api/nowhere', undefined, userToken);

    // An error nobody planned for: the table under a route disappears.
    await sql`DROP TABLE audit_log`.execute(t.server.database.db);
    const r = await call('POST', '/api/tokens', { name: 'will-fail', role: 'user' });
    internal = { status: r.status, body: r.body };

    // Stopping flushes the files; the scratch folder goes only after they are read.
    await t.server.stop();
    const read = (f: string) => readFileSync(join(t.db.dir, 'logs', f), 'utf8');
    logs = { server: read('server.log'), error: read('error.log'), access: read('access.log') };
    await t.db.drop();
  });

  const lines = (text: string) =>
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it('writes server.log, error.log and access.log as JSON lines', () => {
    for (const text of Object.values(logs)) expect(() => lines(text)).not.toThrow();
    expect(lines(logs.server).some((l) => l.msg === 'AI Farm server listening')).toBe(true);
    expect(lines(logs.server).every((l) => typeof l.time === 'string' && typeof l.level === 'number')).toBe(
      true,
    );
  });

  it('has one access.log line per request: time, method, path, status, duration, client address', () => {
    const access = lines(logs.access);
    expect(access.map((l) => [l.method, l.path, l.status])).toEqual(
      sent.map((s) => [s.method, s.path, s.status]),
    );
    for (const l of access) {
      expect(new Date(l.time as string).toString()).not.toBe('Invalid Date');
      expect(l.duration_ms).toEqual(expect.any(Number));
      expect(l.remote_addr).toBe('127.0.0.1');
      expect(l.path).not.toContain('?');
    }
    expect(access.find((l) => l.path === '/api/tasks' && l.method === 'POST')?.principal).toBe('logger');
  });

  it('never holds a token, from the Authorization header or the query string', () => {
    for (const [name, text] of Object.entries(logs)) {
      for (const secret of [t.adminToken, userToken, guessed]) {
        expect(text.includes(secret), `${name}.log`).toBe(false);
        // Not even a recognisable part of it.
        expect(text.includes(secret.slice(4, 24)), `${name}.log`).toBe(false);
      }
      expect(text, `${name}.log`).not.toMatch(/Bearer/i);
    }
  });

  it('answers an unknown error as 500 internal_error with its message hidden, and logs it in error.log', () => {
    expect(internal.status).toBe(500);
    expect(internal.body.error).toEqual({ code: 'internal_error', message: 'Internal server error' });
    const failures = lines(logs.error).filter((l) => l.msg === 'request failed');
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ level: 50, method: 'POST', path: '/api/tokens' });
    expect(JSON.stringify(failures[0])).toMatch(/audit_log/);
    // server.log has everything, errors included; error.log has nothing below error.
    expect(logs.server).toContain('"msg":"request failed"');
    expect(lines(logs.error).every((l) => (l.level as number) >= 50)).toBe(true);
  });
});
