import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { RawClient } from './helpers/ws-client.js';

/** An upgrade from `localAddress`: the status and Retry-After of a refusal, or 101. */
function upgrade(
  url: string,
  token: string,
  localAddress: string,
): Promise<{ status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, localAddress });
    ws.once('open', () => {
      ws.terminate();
      resolve({ status: 101 });
    });
    ws.once('unexpected-response', (_req, res) => {
      const retryAfter = res.headers['retry-after'];
      res.resume();
      ws.terminate();
      resolve({ status: res.statusCode ?? 0, ...(typeof retryAfter === 'string' ? { retryAfter } : {}) });
    });
    ws.once('error', reject);
  });
}

/** GET on the model server from `localAddress`. */
function download(
  base: string,
  path: string,
  token: string,
  localAddress: string,
): Promise<{ status: number; retryAfter?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      base + path,
      { localAddress, headers: token ? { authorization: `Bearer ${token}` } : {} },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          const retryAfter = res.headers['retry-after'];
          resolve({
            status: res.statusCode ?? 0,
            body,
            ...(typeof retryAfter === 'string' ? { retryAfter } : {}),
          });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Failed token checks are counted per address on the WebSocket upgrade and the model
 * server (issue 11, point 9): past MAX_AUTH_FAILURES the address gets 429 before its token is
 * looked up; other addresses are unaffected.
 */
describe.each(DIALECTS)('failed authentications per address on %s', (dialect) => {
  let t: TestServer;
  let workerToken: string;
  beforeAll(async () => {
    t = await startTestServer(dialect, { MAX_AUTH_FAILURES: '5/minute' });
    workerToken = (await t.api('POST', '/api/tokens', { name: 'good', role: 'worker' })).body.token;
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  });

  it('on the WebSocket upgrade: 401 five times, then 429 with Retry-After, even for a good token', async () => {
    for (let i = 0; i < 5; i++)
      expect((await upgrade(t.server.wsUrl, `afm_bad${i}`, '127.0.0.2')).status).toBe(401);
    const refused = await upgrade(t.server.wsUrl, workerToken, '127.0.0.2');
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    expect(Number(refused.retryAfter)).toBeLessThanOrEqual(60);
    // /ws on the API port shares the count.
    expect((await upgrade(`${t.url.replace('http', 'ws')}/ws`, workerToken, '127.0.0.2')).status).toBe(429);
    // Another address is not affected.
    expect((await upgrade(t.server.wsUrl, workerToken, '127.0.0.3')).status).toBe(101);
    const ok = await RawClient.connect(t.server.wsUrl, workerToken, {}, { localAddress: '127.0.0.3' });
    ok.close();
  });

  it('on the model server: 401 five times, then 429 too_many_auth_failures with Retry-After', async () => {
    for (let i = 0; i < 5; i++)
      expect((await download(t.server.modelUrl, '/tasks/1/model', `afm_bad${i}`, '127.0.0.4')).status).toBe(
        401,
      );
    const refused = await download(t.server.modelUrl, '/tasks/1/model', t.adminToken, '127.0.0.4');
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body).error.code).toBe('too_many_auth_failures');
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    // The model registry's `?token=` counts too, from its own address.
    for (let i = 0; i < 5; i++)
      expect(
        (await download(t.server.modelUrl, `/models/m/1?token=afm_bad${i}`, '', '127.0.0.6')).status,
      ).toBe(401);
    expect((await download(t.server.modelUrl, '/models/m/1', t.adminToken, '127.0.0.6')).status).toBe(429);
    // Another address with a good token gets past authentication (404: no such task).
    expect((await download(t.server.modelUrl, '/tasks/999999/model', t.adminToken, '127.0.0.5')).status).toBe(
      404,
    );
  });
});
