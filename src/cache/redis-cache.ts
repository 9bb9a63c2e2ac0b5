import type { RedisLink } from '../bus/redis-link.js';
import type { Logger } from '../observability/logger.js';
import { LruTtl, type Cache, type CacheProvider, type CacheSpaceOptions } from './cache.js';

/** How long an invalidated key refuses fills: longer than any database read takes. */
const TOMBSTONE_MS = 10_000;
/** Invalidations remembered while Redis is away, replayed when it is back. */
const PENDING_LIMIT = 10_000;

/** Stores a value unless the key was invalidated within TOMBSTONE_MS (a fill from an old read). */
const FILL = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;
/** Drops a value and refuses fills for a while. */
const DROP = `
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[1])
return 1`;

import type { Result } from 'ioredis';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    aifarmCacheFill(key: string, tomb: string, value: string, ttlMs: number): Result<number, Context>;
    aifarmCacheDrop(key: string, tomb: string, tombMs: number): Result<number, Context>;
  }
}

/**
 * The cache shared by every instance on one Redis. Values live in Redis (JSON, with the
 * space's TTL); an instance may also keep its own copy for `localTtlMs`, and every
 * invalidation is published so the other instances drop theirs at once.
 *
 * `invalidate` deletes the Redis value and leaves a tombstone before it returns, so with
 * `localTtlMs: 0` no instance can serve the old value after it (the next read misses and
 * goes to the database). While Redis is away, reads go to the database and invalidations
 * are remembered and replayed when it is back.
 */
export class RedisCache implements CacheProvider {
  private readonly spaces = new Map<string, LruTtl<unknown>>();
  private readonly pending = new Set<string>();
  private pendingOverflow = false;
  private readonly stops: (() => void)[] = [];

  constructor(
    private readonly link: RedisLink,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    link.cmd.defineCommand('aifarmCacheFill', { numberOfKeys: 2, lua: FILL });
    link.cmd.defineCommand('aifarmCacheDrop', { numberOfKeys: 2, lua: DROP });
    this.stops.push(
      link.subscribe(this.channel, (raw) => this.onInvalidation(raw)),
      link.onRecovery(() => void this.replay()),
    );
  }

  space<V>(name: string, opts: CacheSpaceOptions): Cache<V> {
    if (this.spaces.has(name)) throw new Error(`cache space ${name} exists already`);
    const local = new LruTtl<V>(opts.maxEntries ?? 10_000, this.now);
    this.spaces.set(name, local as LruTtl<unknown>);
    const localTtl = opts.localTtlMs ?? 0;
    return {
      get: async (key, load) => {
        const hit = local.get(key);
        if (hit !== undefined) return hit;
        const epoch = local.epoch;
        const shared = await this.read<V>(name, key);
        if (shared !== undefined) {
          local.set(key, shared, localTtl, epoch);
          return shared;
        }
        const value = await load();
        if (value !== undefined && epoch === local.epoch) {
          local.set(key, value, localTtl, epoch);
          await this.fill(name, key, value, opts.ttlMs);
        }
        return value;
      },
      invalidate: async (key) => {
        local.delete(key);
        if (!(await this.drop(name, key))) this.remember(name, key);
      },
    };
  }

  async close(): Promise<void> {
    for (const s of this.stops.splice(0)) s();
  }

  private get channel(): string {
    return this.link.key('cache:invalidate');
  }

  private valueKey(space: string, key: string): string {
    return this.link.key(`cache:${space}:v:${key}`);
  }

  private tombKey(space: string, key: string): string {
    return this.link.key(`cache:${space}:t:${key}`);
  }

  private async read<V>(space: string, key: string): Promise<V | undefined> {
    if (!this.link.healthy) return undefined;
    try {
      const raw = await this.link.cmd.get(this.valueKey(space, key));
      return raw === null ? undefined : (JSON.parse(raw) as V);
    } catch (err) {
      this.logger.debug({ err, space }, 'redis cache read failed; reading the database');
      return undefined;
    }
  }

  private async fill(space: string, key: string, value: unknown, ttlMs: number): Promise<void> {
    if (!this.link.healthy) return;
    try {
      await this.link.cmd.aifarmCacheFill(
        this.valueKey(space, key),
        this.tombKey(space, key),
        JSON.stringify(value),
        Math.max(1, Math.round(ttlMs)),
      );
    } catch (err) {
      this.logger.debug({ err, space }, 'redis cache fill failed');
    }
  }

  /** Drops the shared value and tells the other instances; false when Redis could not. */
  private async drop(space: string, key: string): Promise<boolean> {
    if (!this.link.healthy) return false;
    try {
      await this.link.cmd.aifarmCacheDrop(this.valueKey(space, key), this.tombKey(space, key), TOMBSTONE_MS);
    } catch (err) {
      this.logger.debug({ err, space }, 'redis cache invalidation failed; replayed when redis is back');
      return false;
    }
    const message = JSON.stringify({ origin: this.link.instanceId, space, key });
    return this.link.publish(this.channel, message);
  }

  private remember(space: string, key: string): void {
    if (this.pending.size >= PENDING_LIMIT) this.pendingOverflow = true;
    else this.pending.add(JSON.stringify([space, key]));
  }

  /** After an outage: every invalidation Redis missed, or (too many) every shared value. */
  private async replay(): Promise<void> {
    const items = [...this.pending].map((s) => JSON.parse(s) as [string, string]);
    this.pending.clear();
    const all = this.pendingOverflow;
    this.pendingOverflow = false;
    if (all) {
      await this.dropEverything();
      return;
    }
    for (const [space, key] of items) {
      if (!(await this.drop(space, key))) this.remember(space, key);
    }
    if (items.length > 0)
      this.logger.info({ keys: items.length }, 'cache invalidations replayed after the redis outage');
  }

  private async dropEverything(): Promise<void> {
    let cursor = '0';
    // Bounded: SCAN walks the key space once; a key count that keeps growing still ends.
    for (let i = 0; i < 100_000; i++) {
      try {
        const [next, keys] = await this.link.cmd.scan(
          cursor,
          'MATCH',
          this.link.key('cache:*'),
          'COUNT',
          500,
        );
        if (keys.length > 0) await this.link.cmd.unlink(...keys);
        cursor = next;
      } catch (err) {
        this.pendingOverflow = true;
        this.logger.warn(
          { err },
          'dropping the shared cache after the outage failed; retried at the next recovery',
        );
        return;
      }
      if (cursor === '0') break;
    }
    await this.link.publish(this.channel, JSON.stringify({ origin: this.link.instanceId, all: true }));
  }

  private onInvalidation(raw: string): void {
    try {
      const m = JSON.parse(raw) as { origin: string; space?: string; key?: string; all?: boolean };
      if (m.origin === this.link.instanceId) return;
      if (m.all) for (const s of this.spaces.values()) s.clear();
      else if (m.space !== undefined && m.key !== undefined) this.spaces.get(m.space)?.delete(m.key);
    } catch (err) {
      this.logger.warn({ err }, 'unreadable cache invalidation from redis');
    }
  }
}
