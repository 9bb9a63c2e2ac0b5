import type { RedisLink } from '../bus/redis-link.js';

/** Counts a request in a fixed window: INCR, and the window starts with the first one. */
const COUNT = `
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}`;

import type { Result } from 'ioredis';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    aifarmRateCount(key: string, windowMs: number): Result<[number, number], Context>;
  }
}

type Done = (err: Error | null, res?: { current: number; ttl: number }) => void;

/** What @fastify/rate-limit asks of a store (its `store` option takes the class). */
export interface RateLimitStore {
  incr(key: string, done: Done, timeWindow: number, max: number): void;
  child(): RateLimitStore;
}

/** In-memory fixed windows per key, at most `maxKeys` of them (oldest dropped). */
export class LocalCounters {
  private readonly windows = new Map<string, { count: number; ends: number }>();

  constructor(
    private readonly maxKeys = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  count(key: string, windowMs: number): { current: number; ttl: number } {
    const now = this.now();
    let w = this.windows.get(key);
    if (!w || w.ends <= now) {
      this.windows.delete(key);
      w = { count: 0, ends: now + windowMs };
      this.windows.set(key, w);
      if (this.windows.size > this.maxKeys) {
        const oldest = this.windows.keys().next();
        if (!oldest.done) this.windows.delete(oldest.value);
      }
    }
    w.count++;
    return { current: w.count, ttl: w.ends - now };
  }
}

/**
 * The rate limit's counters in Redis, so every instance draws on one budget per address.
 * While Redis is away (or a count fails) each instance counts on its own, in memory: the
 * limit still holds per instance, nobody is refused because of the outage, and the shared
 * counts take over again when Redis is back.
 */
export function sharedRateLimitStore(link: RedisLink): new () => RateLimitStore {
  link.cmd.defineCommand('aifarmRateCount', { numberOfKeys: 1, lua: COUNT });
  const local = new LocalCounters();
  class SharedStore implements RateLimitStore {
    incr(key: string, done: Done, timeWindow: number): void {
      if (!link.healthy) return done(null, local.count(key, timeWindow));
      link.cmd.aifarmRateCount(link.key(`ratelimit:${key}`), timeWindow).then(
        ([current, ttl]: [number, number]) => done(null, { current, ttl }),
        () => done(null, local.count(key, timeWindow)),
      );
    }

    child(): RateLimitStore {
      return this;
    }
  }
  return SharedStore;
}
