import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoginThrottle } from '../src/auth/login-throttle.js';
import { openDatabase, type DatabaseHandle } from '../src/storage/db.js';
import { migrateToLatest } from '../src/storage/migrate.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/db.js';
import { postLogin } from './helpers/panel.js';
import { startTestServer } from './helpers/server.js';

describe.each(DIALECTS)('login throttling on %s', (dialect) => {
  let tdb: TestDatabase;
  let h: DatabaseHandle;
  let now = Date.parse('2030-01-01T00:00:00Z');
  const clock = { now: () => new Date(now) };

  beforeAll(async () => {
    tdb = await createTestDatabase(dialect);
    h = await openDatabase(
      dialect === 'sqlite' ? { dialect, file: tdb.url } : { dialect, options: mysqlOptions(tdb.url) },
    );
    await migrateToLatest(h.db, h.dialect);
  });
  afterAll(async () => {
    await h?.close();
    await tdb?.drop();
  });

  const fail = async (th: LoginThrottle, ip: string, user: string) => {
    const a = await th.begin(ip, user);
    expect(a.allowed).toBe(true);
    await th.recordFailure(ip, user);
    a.release();
  };

  it('allows 5 failures per address in 15 minutes, then says when to retry', async () => {
    const th = new LoginThrottle(h.db, clock);
    for (let i = 0; i < 5; i++) {
      await fail(th, '10.0.0.1', `user${i}`);
      now += 60_000;
    }
    // Failures at t0 .. t0+4 min; now t0+5 min: the first one leaves the window at t0+15 min.
    const v = await th.check('10.0.0.1', 'someone-else');
    expect(v).toEqual({ allowed: false, retryAfterSeconds: 600 });
    expect((await th.check('10.0.0.2', 'someone-else')).allowed).toBe(true);
    now += 600_000;
    expect((await th.check('10.0.0.1', 'someone-else')).allowed).toBe(true);
  });

  it('allows 5 failures per username from any number of addresses', async () => {
    const th = new LoginThrottle(h.db, clock);
    for (let i = 0; i < 5; i++) await fail(th, `10.1.0.${i}`, 'victim');
    expect((await th.check('10.9.9.9', 'victim')).allowed).toBe(false);
    expect((await th.check('10.9.9.9', 'other')).allowed).toBe(true);
  });

  it('counts attempts in flight, so a burst cannot outrun the count', async () => {
    const th = new LoginThrottle(h.db, clock);
    const held = [];
    for (let i = 0; i < 5; i++) held.push(await th.begin('10.2.0.1', `burst${i}`));
    expect(held.every((a) => a.allowed)).toBe(true);
    const sixth = await th.begin('10.2.0.1', 'burst6');
    expect(sixth.allowed).toBe(false);
    for (const a of held) a.release();
    expect((await th.begin('10.2.0.1', 'burst7')).allowed).toBe(true);
  });

  it('a correct password clears the failures of that username from that address', async () => {
    const th = new LoginThrottle(h.db, clock);
    for (let i = 0; i < 4; i++) await fail(th, '10.3.0.1', 'forgetful');
    await th.recordSuccess('10.3.0.1', 'forgetful');
    for (let i = 0; i < 4; i++) await fail(th, '10.3.0.1', 'forgetful');
    expect((await th.check('10.3.0.1', 'forgetful')).allowed).toBe(true);
  });
});

describe('login throttling over HTTP', () => {
  it('answers 429 with Retry-After after 5 wrong passwords, even for the right one', async () => {
    const t = await startTestServer('sqlite', { ADMIN_PASSWORD: 'the-right-password' });
    try {
      for (let i = 0; i < 5; i++) expect((await postLogin(t.url, 'admin', `wrong-${i}`)).status).toBe(401);
      const limited = await postLogin(t.url, 'admin', 'the-right-password');
      expect(limited.status).toBe(429);
      expect(limited.body.error.code).toBe('too_many_login_attempts');
      const retry = Number(limited.headers.get('retry-after'));
      expect(retry).toBeGreaterThan(800);
      expect(retry).toBeLessThanOrEqual(900);
      // The rest of the API is unaffected for token holders.
      expect((await t.api('GET', '/api/tasks')).status).toBe(200);
    } finally {
      await t.stop();
    }
  });
});

function mysqlOptions(url: string) {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  };
}
