import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { InProcessBus, type Bus, type BusTopics, type Topic } from './bus.js';

const PREFIX = 'aifarm:bus:';

/**
 * The bus across server instances: local subscribers are served at once by an in-process
 * bus, and every message is also published on Redis for the other instances (each
 * ignores its own). When Redis is away, this instance keeps working on its own, logs it,
 * and ioredis reconnects by itself; only cross-instance delivery waits.
 */
export class RedisBus implements Bus {
  readonly instanceId = randomUUID();
  private readonly local: InProcessBus;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly subscribed = new Set<string>();
  private down = false;

  constructor(
    url: string,
    private readonly logger: Logger,
  ) {
    this.local = new InProcessBus((err) => logger.error({ err }, 'bus handler failed'));
    const options = { lazyConnect: false, maxRetriesPerRequest: 1, enableOfflineQueue: false };
    this.pub = new Redis(url, options);
    this.sub = new Redis(url, { ...options, enableOfflineQueue: true });
    for (const [name, conn] of [
      ['publisher', this.pub],
      ['subscriber', this.sub],
    ] as const) {
      conn.on('error', (err: Error) => {
        if (!this.down)
          logger.warn({ err: err.message, connection: name }, 'redis unavailable; working on alone');
        this.down = true;
      });
      conn.on('ready', () => {
        if (this.down) logger.info({ connection: name }, 'redis back');
        this.down = false;
      });
    }
    this.sub.on('message', (channel: string, raw: string) => this.onMessage(channel, raw));
  }

  async publish<T extends Topic>(topic: T, message: BusTopics[T]): Promise<void> {
    await this.local.publish(topic, message);
    try {
      await this.pub.publish(PREFIX + topic, JSON.stringify({ origin: this.instanceId, message }));
    } catch (err) {
      // Already logged by the error handler; other instances miss this one.
      this.logger.debug({ err, topic }, 'redis publish failed');
    }
  }

  subscribe<T extends Topic>(topic: T, handler: (message: BusTopics[T]) => void): () => void {
    const channel = PREFIX + topic;
    if (!this.subscribed.has(channel)) {
      this.subscribed.add(channel);
      this.sub
        .subscribe(channel)
        .catch((err: unknown) => this.logger.warn({ err, channel }, 'redis subscribe failed'));
    }
    return this.local.subscribe(topic, handler);
  }

  /** Resolves once both Redis connections are ready (for tests and start-up logs). */
  async ready(): Promise<void> {
    await Promise.all(
      [this.pub, this.sub].map((c) => (c.status === 'ready' ? Promise.resolve() : once(c, 'ready'))),
    );
    // Subscriptions made before the connection was ready are confirmed by now too.
    await this.sub.ping();
  }

  async close(): Promise<void> {
    await this.local.close();
    this.pub.disconnect();
    this.sub.disconnect();
  }

  private onMessage(channel: string, raw: string): void {
    try {
      const { origin, message } = JSON.parse(raw) as { origin: string; message: unknown };
      if (origin === this.instanceId) return;
      void this.local.publish(channel.slice(PREFIX.length) as Topic, message as never);
    } catch (err) {
      this.logger.warn({ err, channel }, 'unreadable bus message from redis');
    }
  }
}

function once(emitter: Redis, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}
