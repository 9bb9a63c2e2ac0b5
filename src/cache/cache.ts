/**
 * A cache of hot reads in front of the database, which stays the source of truth.
 *
 * Glossary: a *space* holds one kind of value (token principals by token hash, ...); a
 * *fill* stores what a load read; an *invalidation* is how every write says "this key
 * changed": the writer calls `invalidate` after its commit, and no instance serves the old
 * value afterwards. A fill whose load started before an invalidation of its space is
 * dropped (it may have read the old row), so a slow read cannot put a stale value back.
 */
export interface Cache<V> {
  /** The cached value of `key`, or `load()`'s (kept unless undefined, which is never cached). */
  get(key: string, load: () => Promise<V | undefined>): Promise<V | undefined>;
  /** Drops `key` here and on every instance sharing the cache; call it after the write commits. */
  invalidate(key: string): Promise<void>;
}

export interface CacheSpaceOptions {
  /** How long a value may be served without reading the database again, ms. */
  ttlMs: number;
  /**
   * Shared (Redis) caches only: how long an instance may serve its own copy without asking
   * Redis, ms. 0 means always ask Redis, which makes an invalidation take effect on every
   * instance before `invalidate` returns (tokens use that). Default: 0.
   */
  localTtlMs?: number;
  /** Most entries kept in this process, least recently used dropped first (default 10,000). */
  maxEntries?: number;
}

/** Makes the cache spaces of one server; in-process, or Redis when instances share one. */
export interface CacheProvider {
  space<V>(name: string, opts: CacheSpaceOptions): Cache<V>;
  close(): Promise<void>;
}

/**
 * A bounded least-recently-used map with expiry, and an epoch that every invalidation
 * advances (a fill that saw an older epoch is not kept). The building block of both
 * implementations.
 */
export class LruTtl<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  /** Advances on every invalidation; fills compare it with the one they started at. */
  epoch = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number,
  ) {}

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    // Re-inserted: Map order is the recency order.
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /** Keeps `value` unless an invalidation happened since `epoch` was read. */
  set(key: string, value: V, ttlMs: number, epoch: number): void {
    if (epoch !== this.epoch || ttlMs <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { value, expires: this.now() + ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.epoch++;
    this.entries.delete(key);
  }

  clear(): void {
    this.epoch++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

/** One process, one cache: invalidation is a synchronous delete. */
export class InProcessCache implements CacheProvider {
  constructor(private readonly now: () => number = Date.now) {}

  space<V>(_name: string, opts: CacheSpaceOptions): Cache<V> {
    const lru = new LruTtl<V>(opts.maxEntries ?? 10_000, this.now);
    return {
      async get(key, load) {
        const hit = lru.get(key);
        if (hit !== undefined) return hit;
        const epoch = lru.epoch;
        const value = await load();
        if (value !== undefined) lru.set(key, value, opts.ttlMs, epoch);
        return value;
      },
      async invalidate(key) {
        lru.delete(key);
      },
    };
  }

  async close(): Promise<void> {}
}
