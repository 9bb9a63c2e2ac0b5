import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisLink } from '../bus/redis-link.js';
import { silentLogger } from '../observability/logger.js';
import { InProcessCache, LruTtl, type CacheProvider } from './cache.js';
import { RedisCache } from './redis-cache.js';
import { sleep } from '../../test/helpers/wait.js';

const REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close();
});

/** One instance's Redis cache; instances made with one prefix share it. */
async function redisCache(prefix: string): Promise<RedisCache> {
  const link = new RedisLink({
    url: REDIS_URL,
    prefix,
    instanceId: randomBytes(4).toString('hex'),
    logger: silentLogger(),
  });
  const cache = new RedisCache(link, silentLogger());
  open.push(link, cache);
  await link.whenHealthy();
  return cache;
}
const freshPrefix = () => `aifarm-test-${randomBytes(5).toString('hex')}:`;

/** A loader that counts its calls and returns what `rows` holds (the "database"). */
function table(rows: Map<string, string>) {
  const calls = { n: 0 };
  const load = (key: string) => async () => {
    calls.n++;
    return rows.get(key);
  };
  return { calls, load };
}

/** The shared suite: both implementations must pass it. */
describe.each([
  ['in-process', async (): Promise<CacheProvider> => new InProcessCache()],
  ['redis', async (): Promise<CacheProvider> => redisCache(freshPrefix())],
] as const)('%s cache', (_name, make) => {
  it('loads once, serves the copy, and reloads after an invalidation', async () => {
    const c = (await make()).space<string>('t', { ttlMs: 60_000, localTtlMs: 60_000 });
    const rows = new Map([['k', 'v1']]);
    const { calls, load } = table(rows);
    expect(await c.get('k', load('k'))).toBe('v1');
    expect(await c.get('k', load('k'))).toBe('v1');
    expect(calls.n).toBe(1);
    rows.set('k', 'v2');
    await c.invalidate('k');
    expect(await c.get('k', load('k'))).toBe('v2');
    expect(calls.n).toBe(2);
  });

  it('never keeps "not found"', async () => {
    const c = (await make()).space<string>('t', { ttlMs: 60_000 });
    const rows = new Map<string, string>();
    const { calls, load } = table(rows);
    expect(await c.get('k', load('k'))).toBeUndefined();
    rows.set('k', 'now here');
    expect(await c.get('k', load('k'))).toBe('now here');
    expect(calls.n).toBe(2);
  });

  it('drops a fill whose read started before an invalidation (it may hold the old row)', async () => {
    const c = (await make()).space<string>('t', { ttlMs: 60_000, localTtlMs: 60_000 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = c.get('k', async () => {
      await gate;
      return 'old';
    });
    await sleep(20);
    await c.invalidate('k');
    release();
    expect(await slow).toBe('old');
    expect(await c.get('k', async () => 'new')).toBe('new');
  });

  it('keeps spaces apart', async () => {
    const p = await make();
    const a = p.space<string>('a', { ttlMs: 60_000 });
    const b = p.space<string>('b', { ttlMs: 60_000 });
    await a.get('k', async () => 'in a');
    expect(await b.get('k', async () => 'in b')).toBe('in b');
  });
});

describe('LruTtl', () => {
  it('drops the least recently used entry beyond its bound, and expired entries', () => {
    let now = 0;
    const lru = new LruTtl<number>(2, () => now);
    lru.set('a', 1, 100, lru.epoch);
    lru.set('b', 2, 100, lru.epoch);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('c', 3, 100, lru.epoch);
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBe(1);
    expect(lru.get('c')).toBe(3);
    now = 100;
    expect(lru.get('a')).toBeUndefined();
    expect(lru.size).toBe(1);
  });
});

describe('redis cache across instances', () => {
  it('an invalidation on one instance drops the copies of the others before it returns', async () => {
    const prefix = freshPrefix();
    const a = (await redisCache(prefix)).space<string>('tok', { ttlMs: 60_000 });
    const b = (await redisCache(prefix)).space<string>('tok', { ttlMs: 60_000 });
    const rows = new Map([['h', 'alice']]);
    const { calls, load } = table(rows);
    expect(await a.get('h', load('h'))).toBe('alice');
    // B finds A's fill in Redis: the database is read once for the whole farm.
    expect(await b.get('h', load('h'))).toBe('alice');
    expect(calls.n).toBe(1);
    rows.delete('h');
    await a.invalidate('h');
    expect(await b.get('h', load('h'))).toBeUndefined();
  });

  it('local copies (localTtlMs) are dropped by the published invalidation', async () => {
    const prefix = freshPrefix();
    const a = (await redisCache(prefix)).space<string>('row', { ttlMs: 60_000, localTtlMs: 60_000 });
    const b = (await redisCache(prefix)).space<string>('row', { ttlMs: 60_000, localTtlMs: 60_000 });
    const rows = new Map([['1', 'v1']]);
    const { load } = table(rows);
    await a.get('1', load('1'));
    await b.get('1', load('1'));
    rows.set('1', 'v2');
    await a.invalidate('1');
    // Pub/sub reaches B shortly after: wait on the outcome, bounded.
    const end = Date.now() + 5000;
    let seen = await b.get('1', load('1'));
    while (seen !== 'v2' && Date.now() < end) {
      await sleep(20);
      seen = await b.get('1', load('1'));
    }
    expect(seen).toBe('v2');
  });
});
