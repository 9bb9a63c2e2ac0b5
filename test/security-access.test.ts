import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { DIALECTS } from './helpers/db.js';
import { login, postLogin, type PanelSession } from './helpers/panel.js';
import { listRoutes, readLogDir, secretHits, upgradeStatus, type RouteEntry } from './helpers/security.js';
import { bodyFor, PRINCIPALS, RULES, type Want, type Who } from './helpers/security-rules.js';
import {
  captureSuiteOutput,
  figures,
  mintToken,
  startSuiteServer,
  wrongToken,
  type SecServer,
} from './helpers/security-server.js';
import { model } from './helpers/safetensors.js';
import { RawClient, registeredClient } from './helpers/ws-client.js';

/**
 * The security suite (docs/security.md), who may get in: every route against every kind of
 * caller who must be refused, cross-origin use of the panel's cookie, login throttling, and no
 * secret in any log. Uploads, slow and flooding clients and rate limits:
 * security-limits.test.ts. Figures are printed at the end.
 */

// The servers also log to stdout (console: 'json'): captured to be scanned for secrets.
const output = captureSuiteOutput(['matrix', 'origin', 'limited', 'secrets']);

describe.each(DIALECTS)('security on %s', (dialect) => {
  let s: SecServer;
  const secrets = new Map<string, string>();
  let adminSession: PanelSession;
  let workerToken: string;
  let ownerToken: string;
  let otherToken: string;
  let revokedToken: string;
  let endedCookie: string;
  let ownerTask: number;
  let workerClient: RawClient;
  const workerClientId = `sec-w-${dialect}`;
  let userId: string;
  let tokenId: string;

  beforeAll(async () => {
    s = await startSuiteServer(dialect, secrets);
    const mint = (name: string, role: string) => mintToken(s, secrets, name, role);
    workerToken = (await mint('sec-workers', 'worker')).token;
    ownerToken = (await mint('sec-owner', 'user')).token;
    otherToken = (await mint('sec-other', 'user')).token;
    const revoked = await mint('sec-revoked', 'admin');
    revokedToken = revoked.token;
    tokenId = revoked.id;
    expect((await s.api('DELETE', `/api/tokens/${revoked.id}`)).status).toBe(200);

    adminSession = await login(s.url, 'admin', s.adminPassword);
    secrets.set('admin session cookie', adminSession.cookie.split('=')[1] ?? '');
    secrets.set('admin CSRF token', adminSession.csrf);
    const userPassword = `user-pw-${generateToken().slice(4, 24)}`;
    secrets.set('panel user password', userPassword);
    const created = await adminSession.api('POST', '/api/users', {
      username: 'sec-user',
      password: userPassword,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    userId = created.body.id as string;
    const ended = await login(s.url, 'sec-user', userPassword);
    secrets.set('ended session cookie', ended.cookie.split('=')[1] ?? '');
    expect((await ended.api('DELETE', '/api/session')).status).toBe(204);
    endedCookie = ended.cookie;

    // The owner's task can never be placed, so no worker ever holds it.
    const t = await s.api(
      'POST',
      '/api/tasks',
      { type: 'sec', requirements: { min_ram_gb: 1e6 } },
      ownerToken,
    );
    expect(t.status).toBe(201);
    ownerTask = t.body.id as number;
    workerClient = await registeredClient(s.server.wsUrl, workerToken, workerClientId, { max_tasks: 1 });
  });
  afterAll(async () => {
    workerClient?.close();
    await s?.stop();
    await s?.db.drop();
  });

  function credentials(who: Who): Record<string, string> {
    switch (who) {
      case 'no token':
        return {};
      case 'wrong token':
        return { authorization: `Bearer ${wrongToken}` };
      case 'revoked token':
        return { authorization: `Bearer ${revokedToken}` };
      case 'ended session':
        return { cookie: endedCookie, 'x-csrf-token': adminSession.csrf };
      case 'worker token':
        return { authorization: `Bearer ${workerToken}` };
      case "another user's token":
        return { authorization: `Bearer ${otherToken}` };
    }
  }

  const fill = (url: string) =>
    url
      .replace('/api/clients/:id', `/api/clients/${workerClientId}`)
      .replace('/api/users/:id', `/api/users/${userId}`)
      .replace('/api/tokens/:id', `/api/tokens/${tokenId}`)
      .replace(':id', String(ownerTask))
      .replace(':round', '1')
      .replace(':rank', '0');

  async function call(method: string, url: string, path: string, headers: Record<string, string>) {
    const h: Record<string, string> = { ...headers };
    let body: string | Buffer | undefined;
    if (url.endsWith('/updates/:rank') && method !== 'PUT') {
      // tus on the update URL: creation (POST) and OPTIONS carry no body.
      path += '?attempt=1&num_samples=1';
      h['x-ai-farm-client'] = workerClientId;
    } else if (url.endsWith('/updates/:rank')) {
      path += '?attempt=1&num_samples=1';
      h['content-type'] = 'application/octet-stream';
      h['x-ai-farm-client'] = workerClientId;
      body = model([1, 1, 1, 1], [1, 1, 1, 1]);
    } else {
      const b = bodyFor(method, url);
      if (b !== undefined) {
        h['content-type'] = 'application/json';
        body = JSON.stringify(b);
      }
    }
    const ctl = new AbortController();
    const res = await fetch(s.url + path, { method, headers: h, body, signal: ctl.signal });
    // The event stream never ends: read the status, then hang up.
    const streaming = (res.headers.get('content-type') ?? '').startsWith('text/event-stream');
    const text = streaming || method === 'HEAD' ? '' : await res.text();
    if (streaming) ctl.abort();
    let code: string | undefined;
    try {
      code = text ? (JSON.parse(text) as { error?: { code?: string } }).error?.code : undefined;
    } catch {
      // HTML, CSS, YAML.
    }
    return { status: res.status, code, text };
  }

  it('enumerates every route of the running app and has a rule for each', async () => {
    const routes = listRoutes(s.server.http);
    const keys = new Set(routes.map((r) => `${r.method === 'HEAD' ? 'GET' : r.method} ${r.url}`));
    const missing = [...keys].filter((k) => !(k in RULES));
    expect(missing, 'routes with no rule in the security matrix: add them to RULES').toEqual([]);
    const stale = Object.keys(RULES).filter((k) => !keys.has(k));
    expect(stale, 'rules for routes the app no longer has').toEqual([]);
    // The OpenAPI document lists nothing the router does not have.
    const doc = (await s.api('GET', '/openapi.json', undefined, null)).body as {
      paths: Record<string, Record<string, unknown>>;
    };
    for (const [p, methods] of Object.entries(doc.paths)) {
      for (const m of Object.keys(methods)) {
        expect(keys.has(`${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`), `${m} ${p}`).toBe(true);
      }
    }
    expect(routes.length).toBeGreaterThan(40);
  });

  it('answers every route x {no token, wrong, revoked, ended session, worker, another user} as documented', async () => {
    const routes: RouteEntry[] = listRoutes(s.server.http);
    const failures: string[] = [];
    let checks = 0;
    let probes = 0;
    for (const route of routes) {
      const key = `${route.method === 'HEAD' ? 'GET' : route.method} ${route.url}`;
      const rule = RULES[key];
      if (!rule) continue; // reported by the enumeration test
      for (const probe of rule.probes ?? [{ path: fill(route.url) }]) {
        probes++;
        for (const who of PRINCIPALS) {
          const kind = who === 'worker token' ? 'worker' : who === "another user's token" ? 'user' : 'anon';
          let want: Want | undefined = probe.want?.[kind];
          if (!want) {
            if (rule.public)
              want = { status: route.url === '/api/session' ? 400 : [200, 204, 301, 302, 503] };
            else if (kind === 'anon') want = { status: 401, code: 'unauthorized' };
            else want = rule[kind];
          }
          if (!want) throw new Error(`no expectation for ${key} / ${who}`);
          const got = await call(route.method, route.url, probe.path, credentials(who));
          checks++;
          const statuses = Array.isArray(want.status) ? want.status : [want.status];
          const codeOk = !want.code || route.method === 'HEAD' || got.code === want.code;
          if (!statuses.includes(got.status) || !codeOk) {
            failures.push(
              `${route.method} ${probe.path} as ${who}: got ${got.status} ${got.code ?? ''}, want ${statuses.join('|')} ${want.code ?? ''}`,
            );
          }
          if (route.method === 'GET' && route.url === '/api/tasks' && got.status === 200) {
            if (got.text.includes(`"id":${ownerTask},`))
              failures.push(`${who} sees the owner's task in the list`);
          }
        }
      }
    }
    figures.routes = new Set(routes.map((r) => `${r.method} ${r.url}`)).size;
    figures.probes = probes;
    figures.principals = PRINCIPALS.length;
    figures.matrixChecks += checks;
    expect(failures).toEqual([]);
    // The owner's task survived every attempt on it.
    const mine = await s.api('GET', `/api/tasks/${ownerTask}`, undefined, ownerToken);
    expect(mine.body).toMatchObject({ id: ownerTask, status: 'pending' });
  });

  it('the owner reaches the same task routes (the 404s above are about ownership)', async () => {
    const readOnly = [
      '/api/tasks/:id',
      '/api/tasks/:id/events',
      '/api/tasks/:id/metrics',
      '/api/tasks/:id/assignments',
      '/api/tasks/:id/logs',
      '/api/tasks/:id/rounds',
      '/api/tasks/:id/rounds/current',
      '/api/tasks/:id/rounds/:round/model',
      '/api/tasks/:id/model',
    ];
    for (const url of readOnly) {
      const got = await call('GET', url, fill(url), { authorization: `Bearer ${ownerToken}` });
      expect(got.status, url).not.toBe(401);
      expect(got.status, url).not.toBe(403);
      expect(got.code, url).not.toBe('task_not_found');
      figures.ownerControls++;
    }
  });

  it('the model server (MODEL_SERVER_PORT) refuses the same callers', async () => {
    for (const path of [`/tasks/${ownerTask}/model`, `/tasks/${ownerTask}/rounds/1/model`]) {
      for (const who of PRINCIPALS) {
        const res = await fetch(s.server.modelUrl + path, { headers: credentials(who) });
        const body = (await res.json()) as { error: { code: string } };
        const want = who === 'worker token' || who === "another user's token" ? 404 : 401;
        expect([res.status, body.error.code], `${path} as ${who}`).toEqual([
          want,
          want === 404 ? 'task_not_found' : 'unauthorized',
        ]);
        figures.matrixChecks++;
      }
    }
  });

  it("refuses the admin's session cookie from a foreign origin: WebSocket on both ports, event stream, API", async () => {
    const evil = { origin: 'http://evil.example', cookie: adminSession.cookie };
    const apiWs = `${s.url.replace('http', 'ws')}/ws`;
    for (const url of [s.server.wsUrl, apiWs]) {
      expect(await upgradeStatus(url, evil), url).toBe(403);
      // From the right origin the cookie is still no worker credential.
      const own = new URL(url).host;
      expect(await upgradeStatus(url, { origin: `http://${own}`, cookie: adminSession.cookie }), url).toBe(
        401,
      );
      figures.originRefusals++;
    }
    const events = await call('GET', '/api/events', '/api/events', {
      cookie: adminSession.cookie,
      origin: 'http://evil.example',
    });
    expect(events).toMatchObject({ status: 403, code: 'origin_forbidden' });
    const crossSite = await call('GET', '/api/events', '/api/events', {
      cookie: adminSession.cookie,
      'sec-fetch-site': 'cross-site',
    });
    expect(crossSite).toMatchObject({ status: 403, code: 'origin_forbidden' });
    const minted = await call('POST', '/api/tokens', '/api/tokens', {
      cookie: adminSession.cookie,
      'x-csrf-token': adminSession.csrf,
      origin: 'null',
    });
    expect(minted).toMatchObject({ status: 403, code: 'origin_forbidden' });
    figures.originRefusals += 3;
    // The panel's own pages still get the stream.
    const own = await call('GET', '/api/events', '/api/events', {
      cookie: adminSession.cookie,
      origin: s.url,
      'sec-fetch-site': 'same-origin',
    });
    expect(own.status).toBe(200);
  });

  it('throttles admin-login brute force: 5 wrong passwords, then 429 even for the right one', async () => {
    for (let i = 0; i < 5; i++) {
      const guess = `guess-${i}-${generateToken().slice(4, 16)}`;
      secrets.set(`guessed password ${i}`, guess);
      const r = await postLogin(s.url, 'admin', guess);
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe('invalid_credentials');
    }
    const right = await postLogin(s.url, 'admin', s.adminPassword);
    expect(right.status).toBe(429);
    expect(right.body.error.code).toBe('too_many_login_attempts');
    expect(Number(right.headers.get('retry-after'))).toBeGreaterThan(0);
    figures.loginThrottled++;
  });

  it('writes no token, password or cookie to any log file or to stdout', async () => {
    // Tokens in the query string too (the gateway accepts ?token=), where access logs often leak them.
    await s.api('GET', `/api/tasks?token=${ownerToken}`, undefined, ownerToken);
    const q = await RawClient.connect(`${s.server.wsUrl}/?token=${workerToken}`, null);
    q.close();
    await s.stop();
    const logs = readLogDir(join(s.db.dir, 'logs'));
    expect(Object.keys(logs).sort()).toEqual(['access.log', 'error.log', 'server.log']);
    expect(logs['access.log']!.length).toBeGreaterThan(1000);
    const texts = { ...logs, 'stdout+stderr': output.text() };
    expect(texts['stdout+stderr']).toContain('AI Farm server listening');
    figures.secretsScanned += secrets.size;
    figures.logBytesScanned += Object.values(texts).reduce((n, t) => n + t.length, 0);
    // The scan itself can see a secret, whole or cut out of a longer string.
    expect(secretHits({ probe: `x${s.adminToken.slice(2, 30)}x` }, secrets)).toEqual(['probe: admin token']);
    const hits = secretHits(texts, secrets);
    figures.secretHits += hits.length;
    expect(hits).toEqual([]);
    expect(logs['server.log']).not.toMatch(/Bearer /i);
  });
});
