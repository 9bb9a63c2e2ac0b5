import type { Logger } from '../observability/logger.js';
import type { RedisLink } from './redis-link.js';

/**
 * Which clients are connected to the farm, and through which server instance. Each
 * instance is the authority on its own sockets (the client registry); presence makes that
 * visible to the others, for the farm-wide `connected_clients` and GET /api/clients.
 */
export interface Presence {
  /** client id -> instance id, for every connected client of the farm. */
  connected(): Promise<Map<string, string>>;
  /** A client of this instance connected or disconnected: publish it now. */
  changed(clientId: string): Promise<void>;
  start(): void;
  /** Withdraws this instance's clients (they reconnect elsewhere). */
  close(): Promise<void>;
}

/** This instance's connected client ids (the registry's clients with a socket). */
export type LocalClients = () => Iterable<string>;

/** One instance: the registry is the whole truth. */
export class InProcessPresence implements Presence {
  constructor(
    private readonly instanceId: string,
    private readonly local: LocalClients,
  ) {}

  async connected(): Promise<Map<string, string>> {
    return new Map([...this.local()].map((id) => [id, this.instanceId]));
  }

  async changed(): Promise<void> {}
  start(): void {}
  async close(): Promise<void> {}
}

/** Deletes a hash field only if it still names this instance (a client may have moved on). */
const RELEASE = `
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n`;

import type { Result } from 'ioredis';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    aifarmPresenceRelease(hash: string, instanceId: string, ...ids: string[]): Result<number, Context>;
  }
}

export interface RedisPresenceOptions {
  /** How often this instance renews its heartbeat and re-publishes its clients, ms (default 5000). */
  heartbeatMs?: number;
  /** How long an instance counts as alive after its last heartbeat, ms (default 3 x heartbeatMs). */
  ttlMs?: number;
}

/**
 * Presence on Redis: a hash `presence:clients` (client id -> instance id) and a key
 * `presence:instance:<id>` per instance, renewed every heartbeat with a TTL. Entries of
 * an instance whose key expired (it died without saying goodbye) are ignored and pruned,
 * so its clients disappear within the TTL. Every heartbeat also re-publishes this
 * instance's clients, which repairs whatever a Redis outage or restart lost. While Redis
 * is away, `connected()` answers with this instance's clients alone.
 */
export class RedisPresence implements Presence {
  private timer: NodeJS.Timeout | null = null;
  private readonly heartbeatMs: number;
  private readonly ttlMs: number;
  private stopRecovery: (() => void) | null = null;
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly link: RedisLink,
    private readonly local: LocalClients,
    private readonly logger: Logger,
    opts: RedisPresenceOptions = {},
  ) {
    this.heartbeatMs = opts.heartbeatMs ?? 5000;
    this.ttlMs = opts.ttlMs ?? this.heartbeatMs * 3;
    link.cmd.defineCommand('aifarmPresenceRelease', { numberOfKeys: 1, lua: RELEASE });
  }

  private get me(): string {
    return this.link.instanceId;
  }

  private get hash(): string {
    return this.link.key('presence:clients');
  }

  private instanceKey(id: string): string {
    return this.link.key(`presence:instance:${id}`);
  }

  start(): void {
    void this.sync();
    this.timer = setInterval(() => void this.sync(), this.heartbeatMs);
    this.timer.unref();
    this.stopRecovery = this.link.onRecovery(() => void this.sync());
  }

  async changed(clientId: string): Promise<void> {
    if (!this.link.healthy) return;
    const here = new Set(this.local()).has(clientId);
    try {
      if (here) await this.link.cmd.hset(this.hash, clientId, this.me);
      else await this.link.cmd.aifarmPresenceRelease(this.hash, this.me, clientId);
    } catch (err) {
      this.logger.debug({ err, clientId }, 'presence update failed; the next heartbeat repairs it');
    }
  }

  async connected(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (this.link.healthy) {
      try {
        const all = await this.link.cmd.hgetall(this.hash);
        const others = [...new Set(Object.values(all))].filter((i) => i !== this.me);
        const alive = new Set<string>();
        if (others.length > 0) {
          const beats = await this.link.cmd.mget(...others.map((i) => this.instanceKey(i)));
          others.forEach((id, i) => {
            if (beats[i] !== null) alive.add(id);
          });
        }
        for (const [client, instance] of Object.entries(all)) {
          if (instance !== this.me && alive.has(instance)) out.set(client, instance);
        }
        const dead = others.filter((i) => !alive.has(i));
        if (dead.length > 0) void this.prune(all, dead);
      } catch (err) {
        this.logger.debug({ err }, 'presence read failed; counting this instance alone');
      }
    }
    // This instance's own sockets are known exactly, Redis or not.
    for (const id of this.local()) out.set(id, this.me);
    return out;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopRecovery?.();
    await this.syncing;
    if (!this.link.healthy) return;
    try {
      const all = await this.link.cmd.hgetall(this.hash);
      const mine = Object.keys(all).filter((c) => all[c] === this.me);
      if (mine.length > 0) await this.link.cmd.aifarmPresenceRelease(this.hash, this.me, ...mine);
      await this.link.cmd.del(this.instanceKey(this.me));
    } catch (err) {
      this.logger.debug({ err }, 'presence withdrawal failed; it expires by itself');
    }
  }

  /** Heartbeat: renews this instance's key and makes the hash agree with the registry. */
  private sync(): Promise<void> {
    this.syncing ??= this.syncOnce().finally(() => (this.syncing = null));
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    if (!this.link.healthy) return;
    try {
      await this.link.cmd.set(this.instanceKey(this.me), String(Date.now()), 'PX', this.ttlMs);
      const here = new Set(this.local());
      const all = await this.link.cmd.hgetall(this.hash);
      const gone = Object.keys(all).filter((c) => all[c] === this.me && !here.has(c));
      const add = [...here].filter((c) => all[c] !== this.me);
      if (gone.length > 0) await this.link.cmd.aifarmPresenceRelease(this.hash, this.me, ...gone);
      if (add.length > 0)
        await this.link.cmd.hset(this.hash, Object.fromEntries(add.map((c) => [c, this.me])));
    } catch (err) {
      this.logger.debug({ err }, 'presence heartbeat failed');
    }
  }

  private async prune(all: Record<string, string>, dead: string[]): Promise<void> {
    try {
      for (const instance of dead) {
        const ids = Object.keys(all).filter((c) => all[c] === instance);
        if (ids.length > 0) await this.link.cmd.aifarmPresenceRelease(this.hash, instance, ...ids);
      }
    } catch (err) {
      this.logger.debug({ err }, 'pruning presence of dead instances failed');
    }
  }
}
