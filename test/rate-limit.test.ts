import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { sleep } from './helpers/wait.js';

/** RATE_LIMIT per client address, as the seed's "60/minute"; a fresh server per case. */
describe.each(DIALECTS)('rate limit on %s', (dialect) => {
  describe('RATE_LIMIT=5/minute', () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { RATE_LIMIT: '5/minute' });
    });
    afterAll(async () => t?.stop());

    it('answers the 6th request from one address with 429, Retry-After and code rate_limited', async () => {
      for (let i = 1; i <= 5; i++) {
        const ok = await t.api('GET', '/api/tasks');
        expect(ok.status, `request ${i}`).toBe(200);
        expect(ok.headers.get('x-ratelimit-remaining')).toBe(String(5 - i));
      }
      const sixth = await t.api('GET', '/api/tasks');
      expect(sixth.status).toBe(429);
      expect(sixth.body.error.code).toBe('rate_limited');
      expect(sixth.body.error.message).toMatch(/5\/minute/);
      const retryAfter = Number(sixth.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
      // Every route counts against the same address, whatever the token.
      expect((await t.api('POST', '/api/tasks', { type: 'x', requirements: {} })).status).toBe(429);
    });

    it('counts requests without a valid token too (no free guessing of tokens)', async () => {
      const r = await t.api('GET', '/api/tasks', undefined, 'afm_guess');
      expect(r.status).toBe(429);
      expect((await t.api('GET', '/api/tasks', undefined, null)).status).toBe(429);
    });

    it('never limits /health and /ready', async () => {
      for (let i = 0; i < 12; i++) {
        expect((await t.api('GET', '/health', undefined, null)).status).toBe(200);
        expect((await t.api('GET', '/ready', undefined, null)).status).toBe(200);
      }
      expect((await t.api('GET', '/health?probe=1', undefined, null)).status).toBe(200);
    });
  });

  describe('RATE_LIMIT=off', () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { RATE_LIMIT: 'off' });
    });
    afterAll(async () => t?.stop());

    it('does not limit at all', async () => {
      for (let i = 0; i < 30; i++) expect((await t.api('GET', '/api/tasks')).status).toBe(200);
      const r = await t.api('GET', '/api/tasks');
      expect(r.headers.get('x-ratelimit-limit')).toBeNull();
    });
  });

  describe('RATE_LIMIT=2/second', () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { RATE_LIMIT: '2/second' });
    });
    afterAll(async () => t?.stop());

    it('opens again once the window has passed', async () => {
      // Three requests one after another may straddle two windows on a busy machine (each
      // window then sees at most 2): bursts sent together always put a third in one window.
      let limited: Awaited<ReturnType<TestServer['api']>> | undefined;
      for (let burst = 0; burst < 10 && !limited; burst++) {
        const answers = await Promise.all(Array.from({ length: 5 }, () => t.api('GET', '/api/tasks')));
        limited = answers.find((a) => a.status === 429);
      }
      if (!limited) throw new Error('no 429 in 10 bursts of 5 requests at RATE_LIMIT=2/second');
      await sleep(Number(limited.headers.get('retry-after')) * 1000 + 100);
      expect((await t.api('GET', '/api/tasks')).status).toBe(200);
    });
  });
});
