import { request as httpRequest } from 'node:http';
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

  it('after 5 failures on a username, refuses it to addresses that failed, never to a clean one', async () => {
    const th = new LoginThrottle(h.db, clock);
    for (let i = 0; i < 5; i++) await fail(th, `10.1.0.${i}`, 'victim');
    // Each of those addresses failed once: the username is closed to them...
    expect((await th.check('10.1.0.0', 'victim')).allowed).toBe(false);
    expect((await th.check('10.1.0.0', 'other')).allowed).toBe(true);
    // ...but an address without failures still reaches the password check.
    expect((await th.check('10.9.9.9', 'victim')).allowed).toBe(true);
    // It gets one try: once it fails, it is refused too.
    await fail(th, '10.9.9.9', 'victim');
    expect((await th.check('10.9.9.9', 'victim')).allowed).toBe(false);
    // A burst from a clean address gets one attempt in flight, not many.
    const first = await th.begin('10.9.9.8', 'victim');
    expect(first.allowed).toBe(true);
    expect((await th.begin('10.9.9.8', 'victim')).allowed).toBe(false);
    first.release();
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

/** POST /api/session from `localAddress` (any 127.x.y.z on Linux), as another machine would. */
function loginFrom(base: string, localAddress: string, username: string, password: string): Promise<number> {
  const body = JSON.stringify({ username, password });
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${base}/api/session`,
      { method: 'POST', localAddress, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe.each(DIALECTS)('login lockout is not a denial of service, on %s', (dialect) => {
  it('wrong admin passwords from other addresses do not lock the admin out of a clean address', async () => {
    const t = await startTestServer(dialect, { ADMIN_PASSWORD: 'the-right-password' });
    try {
      // An attacker spread over five addresses, one wrong password each (under the per-address limit).
      for (let i = 2; i <= 6; i++) expect(await loginFrom(t.url, `127.0.0.${i}`, 'admin', 'guess')).toBe(401);
      // Once more each: the username is now closed to addresses that failed.
      for (let i = 2; i <= 6; i++) expect(await loginFrom(t.url, `127.0.0.${i}`, 'admin', 'guess')).toBe(429);
      // The admin, from an address without failures, gets in (before the fix: 429 for 15 minutes).
      expect(await loginFrom(t.url, '127.0.0.1', 'admin', 'the-right-password')).toBe(200);
      // A new address gets one guess at the still-hot username, then is refused.
      expect(await loginFrom(t.url, '127.0.0.7', 'admin', 'guess')).toBe(401);
      expect(await loginFrom(t.url, '127.0.0.7', 'admin', 'the-right-password')).toBe(429);
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
