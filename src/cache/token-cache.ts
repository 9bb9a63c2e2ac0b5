import type { Principal } from '../auth/principal.js';
import { TOKEN_CACHE_TTL_MS } from '../auth/token-service.js';
import type { Bus } from '../bus/bus.js';
import { RedisBus } from '../bus/redis-bus.js';
import { RedisLink } from '../bus/redis-link.js';
import { createInstanceId } from '../cluster/instance-id.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { Cache, CacheProvider } from './cache.js';
import { RedisCache } from './redis-cache.js';

/**
 * The cache of token lookups, shared in Redis. Only with Redis: `ai-farm tokens revoke`
 * writes the database from another process, which can reach the servers' cache through
 * Redis (see withSharedTokenCache) but not a cache inside each server, so a token cached
 * in-process would outlive its revocation. No local copies: the Redis read is what makes a
 * revocation hold on every instance as soon as it returns.
 */
export function tokenCache(shared: CacheProvider | null): Cache<Principal> | undefined {
  return shared?.space<Principal>('token', { ttlMs: TOKEN_CACHE_TTL_MS, localTtlMs: 0 });
}

/**
 * For commands that change tokens outside a server (`ai-farm tokens revoke`): the token
 * cache the servers share and their bus, when REDIS_URL is set and Redis answers within
 * `waitMs`; undefined otherwise (the cached copy then expires within TOKEN_CACHE_TTL_MS,
 * and each server finds the revoked token's sockets by re-checking them in the database).
 */
export async function withSharedTokenCache<T>(
  config: Config,
  logger: Logger,
  fn: (cache: Cache<Principal> | undefined, bus: Bus | undefined) => Promise<T>,
  waitMs = 3000,
): Promise<T> {
  if (!config.REDIS_URL) return fn(undefined, undefined);
  const link = new RedisLink({
    url: config.REDIS_URL,
    prefix: config.REDIS_KEY_PREFIX,
    instanceId: `cli-${createInstanceId()}`,
    logger,
  });
  const shared = new RedisCache(link, logger);
  const bus = new RedisBus(link, logger);
  try {
    let timer: NodeJS.Timeout | undefined;
    const up = await Promise.race([
      link.whenHealthy().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), waitMs))),
    ]);
    clearTimeout(timer);
    return up ? await fn(tokenCache(shared), bus) : await fn(undefined, undefined);
  } finally {
    await bus.close();
    await shared.close();
    link.close();
  }
}
