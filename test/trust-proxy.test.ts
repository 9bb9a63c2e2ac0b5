/**
 * TRUST_PROXY (issue 11 point 8): behind a TLS-terminating proxy the panel's session cookie is
 * Secure, because the proxy's X-Forwarded-Proto counts; from anyone not trusted it does not.
 */
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { DIALECTS } from './helpers/db.js';
import { postLogin } from './helpers/panel.js';
import { startTestServer } from './helpers/server.js';

const PASSWORD = 'proxy-test-password-1';

/** The Set-Cookie of a login, with and without X-Forwarded-Proto: https, on a server with `trust`. */
async function cookies(dialect: (typeof DIALECTS)[number], trust: string | undefined) {
  const t = await startTestServer(dialect, {
    ADMIN_PASSWORD: PASSWORD,
    ...(trust === undefined ? {} : { TRUST_PROXY: trust }),
  });
  try {
    const viaTls = await postLogin(t.url, 'admin', PASSWORD, { 'x-forwarded-proto': 'https' });
    const plain = await postLogin(t.url, 'admin', PASSWORD);
    expect(viaTls.status).toBe(200);
    expect(plain.status).toBe(200);
    return { viaTls: viaTls.headers.get('set-cookie') ?? '', plain: plain.headers.get('set-cookie') ?? '' };
  } finally {
    await t.stop();
  }
}

const secure = /;\s*Secure(;|$)/;

/** A WebSocket upgrade claiming to come from `forwardedFor`: the open socket, or the refusal's status. */
function upgradeFrom(url: string, token: string, forwardedFor: string): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwardedFor },
    });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      resolve(res.statusCode ?? 0);
    });
    ws.once('error', reject);
  });
}

/** Opens three sockets from one forwarded address and one from another; returns what each got. */
async function capsBehindProxy(dialect: (typeof DIALECTS)[number], trust: string | undefined) {
  const t = await startTestServer(dialect, {
    MAX_CONNECTIONS_PER_ADDRESS: 2,
    REGISTER_TIMEOUT: 60,
    ...(trust === undefined ? {} : { TRUST_PROXY: trust }),
  });
  const open: WebSocket[] = [];
  try {
    const token = (await t.api('POST', '/api/tokens', { name: 'proxied', role: 'worker' })).body.token;
    const got: (number | 'open')[] = [];
    for (const from of ['203.0.113.1', '203.0.113.1', '203.0.113.1', '203.0.113.2']) {
      const r = await upgradeFrom(t.server.wsUrl, token, from);
      if (typeof r === 'number') got.push(r);
      else {
        open.push(r);
        got.push('open');
      }
    }
    return got;
  } finally {
    for (const ws of open) ws.terminate();
    await t.stop();
  }
}

describe.each(DIALECTS)('TRUST_PROXY (%s)', (dialect) => {
  it('ignores X-Forwarded-Proto by default', async () => {
    const c = await cookies(dialect, undefined);
    expect(c.viaTls).toMatch(/HttpOnly/);
    expect(c.viaTls).not.toMatch(secure);
    expect(c.plain).not.toMatch(secure);
  });

  it('makes the cookie Secure over https from a trusted proxy, by address or hop count', async () => {
    for (const trust of ['127.0.0.1', '127.0.0.0/8, ::1', 'loopback', '1']) {
      const c = await cookies(dialect, trust);
      expect(c.viaTls, `TRUST_PROXY=${trust}`).toMatch(secure);
      expect(c.plain, `TRUST_PROXY=${trust}`).not.toMatch(secure);
    }
  }, 240_000); // four servers, one after the other: generous for a loaded machine

  it('counts WebSocket connections per forwarded address behind a trusted proxy, per peer otherwise', async () => {
    expect(await capsBehindProxy(dialect, 'loopback')).toEqual(['open', 'open', 429, 'open']);
    // Untrusted: X-Forwarded-For is ignored, every socket is the loopback peer's.
    expect(await capsBehindProxy(dialect, undefined)).toEqual(['open', 'open', 429, 429]);
  });

  it('ignores X-Forwarded-Proto from a peer that is not the trusted proxy', async () => {
    const c = await cookies(dialect, '10.1.2.3');
    expect(c.viaTls).not.toMatch(secure);
  });
});

describe('TRUST_PROXY values', () => {
  const load = (v: string) => loadConfig({ env: { TRUST_PROXY: v } });
  it('takes off, true, a hop count, and addresses or CIDRs', () => {
    for (const v of ['off', 'true', '2', '10.0.0.1', '10.0.0.0/8,192.168.1.1', 'fd00::/8, ::1', 'loopback']) {
      const r = load(v);
      expect(r.ok, `${v}: ${JSON.stringify(r)}`).toBe(true);
    }
  });
  it('refuses anything else, naming the key', () => {
    for (const v of ['yes', '10.0.0.1;rm', 'example.com']) {
      const r = load(v);
      expect(r.ok, v).toBe(false);
      expect(!r.ok && r.errors.join('\n')).toMatch(/TRUST_PROXY/);
    }
  });
});
