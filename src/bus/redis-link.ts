import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.js';

/** How often the link checks that Redis still answers. */
const PROBE_EVERY_MS = 1000;

/** Key prefix when REDIS_KEY_PREFIX is not set. */
export const DEFAULT_REDIS_PREFIX = 'aifarm:';

export interface RedisLinkOptions {
  url: string;
  /** Prefix of every key and channel, so several farms (or test runs) can share one Redis. */
  prefix?: string;
  /** This server process (src/cluster/instance-id.ts). */
  instanceId: string;
  logger: Logger;
}

/**
 * The two Redis connections of one server process, shared by the bus, the cache, the
 * presence of clients and the rate limit: one for commands, one for subscriptions.
 *
 * Redis is optional at run time too: `healthy` says whether both connections are up, and
 * users check it before asking Redis anything, so a Redis that went away costs no request
 * a timeout (a Redis that hangs with its connections open is found by a ping each second). The
 * outage is logged once and the recovery once (not per connection, not per
 * request); ioredis reconnects by itself, and `onRecovery` callbacks then re-publish what
 * the outage may have lost (presence, invalidations, queued bus messages).
 */
export class RedisLink {
  readonly cmd: Redis;
  readonly sub: Redis;
  readonly instanceId: string;
  readonly prefix: string;
  private readonly logger: Logger;
  private readonly ready = { cmd: false, sub: false };
  private state: 'starting' | 'up' | 'down' = 'starting';
  private closed = false;
  private readonly channels = new Map<string, Set<(raw: string) => void>>();
  private readonly recoveries = new Set<() => void>();
  private readonly waiters: (() => void)[] = [];
  private readonly watchdog: NodeJS.Timeout;
  private probing = false;

  constructor(opts: RedisLinkOptions) {
    this.instanceId = opts.instanceId;
    this.prefix = opts.prefix ?? DEFAULT_REDIS_PREFIX;
    this.logger = opts.logger.child({ component: 'redis' });
    const base: RedisOptions = {
      // Reconnect quickly and forever; nothing waits on it meanwhile.
      retryStrategy: (times) => Math.min(100 * times, 1000),
      connectTimeout: 2000,
      // A command in flight when the connection drops fails at once instead of being
      // retried later: its caller has already fallen back to the database.
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
    };
    // Commands fail fast while disconnected (users check `healthy` first anyway).
    this.cmd = new Redis(opts.url, { ...base, enableOfflineQueue: false, commandTimeout: 2000 });
    this.sub = new Redis(opts.url, { ...base, enableOfflineQueue: true, maxRetriesPerRequest: null });
    for (const name of ['cmd', 'sub'] as const) {
      const conn = this[name];
      conn.on('ready', () => this.onReady(name));
      conn.on('close', () => this.onLost(name, 'connection closed'));
      conn.on('error', (err: Error) => this.onLost(name, err.message));
    }
    this.sub.on('message', (channel: string, raw: string) => {
      for (const h of this.channels.get(channel) ?? []) h(raw);
    });
    // A Redis that hangs (stopped, swapping, a network that drops packets) keeps its sockets
    // open: nothing closes, and every command would wait out its timeout. A ping each second
    // notices it, and the link goes down until Redis answers a fresh connection again.
    this.watchdog = setInterval(() => void this.probe(), PROBE_EVERY_MS);
    this.watchdog.unref();
  }

  /** Both connections are up: Redis can be asked. */
  get healthy(): boolean {
    return this.state === 'up';
  }

  /** A key or channel name under this farm's prefix. */
  key(name: string): string {
    return this.prefix + name;
  }

  /** Listens on a channel (full name, see `key`); returns the function that stops. */
  subscribe(channel: string, handler: (raw: string) => void): () => void {
    let set = this.channels.get(channel);
    if (!set) {
      set = new Set();
      this.channels.set(channel, set);
      if (this.ready.sub) this.sendSubscribe([channel]);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
      if (set.size === 0 && this.channels.get(channel) === set) {
        this.channels.delete(channel);
        if (this.ready.sub) this.sub.unsubscribe(channel).catch(() => {});
      }
    };
  }

  /** Publishes on a channel; false when Redis could not take it. */
  async publish(channel: string, payload: string): Promise<boolean> {
    if (!this.healthy) return false;
    try {
      await this.cmd.publish(channel, payload);
      return true;
    } catch (err) {
      this.logger.debug({ err, channel }, 'redis publish failed');
      return false;
    }
  }

  /** Called each time Redis comes back after an outage; returns the function that stops. */
  onRecovery(fn: () => void): () => void {
    this.recoveries.add(fn);
    return () => this.recoveries.delete(fn);
  }

  /** Resolves once both connections are up and subscriptions are confirmed (tests, start-up). */
  async whenHealthy(): Promise<void> {
    if (!this.healthy) await new Promise<void>((resolve) => this.waiters.push(resolve));
    await this.sub.ping();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.watchdog);
    this.recoveries.clear();
    this.channels.clear();
    this.cmd.disconnect();
    this.sub.disconnect();
  }

  private sendSubscribe(channels: string[]): void {
    if (channels.length === 0) return;
    this.sub.subscribe(...channels).catch((err: unknown) => {
      // The next `ready` subscribes again; the outage itself is logged once by onLost.
      this.logger.debug({ err }, 'redis subscribe failed');
    });
  }

  private async probe(): Promise<void> {
    if (this.state !== 'up' || this.probing || this.closed) return;
    this.probing = true;
    // The command timeout (2 s) bounds the wait: a live Redis answers in well under a millisecond.
    const failure = await this.cmd.ping().then(
      () => null,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    this.probing = false;
    if (failure === null || this.state !== 'up' || this.closed) return;
    this.onLost('cmd', `no answer to PING: ${failure}`);
    // Fresh connections: `ready` (and with it the recovery) comes once Redis answers again.
    this.cmd.disconnect(true);
    this.sub.disconnect(true);
  }

  private onReady(name: 'cmd' | 'sub'): void {
    this.ready[name] = true;
    if (name === 'sub') this.sendSubscribe([...this.channels.keys()]);
    if (!this.ready.cmd || !this.ready.sub || this.state === 'up') return;
    const was = this.state;
    this.state = 'up';
    if (was === 'down') this.logger.warn('redis back: sharing with other instances again');
    else this.logger.info('redis connected');
    for (const w of this.waiters.splice(0)) w();
    if (was === 'down') {
      for (const fn of this.recoveries) {
        try {
          fn();
        } catch (err) {
          this.logger.error({ err }, 'redis recovery step failed');
        }
      }
    }
  }

  private onLost(name: 'cmd' | 'sub', reason: string): void {
    this.ready[name] = false;
    if (this.closed || this.state === 'down') return;
    this.state = 'down';
    this.logger.warn(
      { reason },
      'redis unavailable: serving from the database, on this instance alone, until it is back',
    );
  }
}
