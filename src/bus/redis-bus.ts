import type { Logger } from '../observability/logger.js';
import { InProcessBus, TOPICS, type Bus, type BusTopics, type Topic } from './bus.js';
import type { RedisLink } from './redis-link.js';

/** Messages kept for other instances while Redis is away; the oldest are dropped beyond it. */
const OUTBOX_LIMIT = 10_000;

/**
 * The bus across server instances: local subscribers are served at once by an in-process
 * bus, and every message is also published on Redis for the other instances (each
 * ignores its own). While Redis is away this instance keeps working on its own: local
 * delivery goes on, and messages for the others wait in a bounded outbox, published in
 * order when Redis is back (a late pause or wake-up beats a lost one; receivers re-read
 * the database anyway). The dispatcher's periodic sweep covers wake-ups lost beyond that.
 */
export class RedisBus implements Bus {
  private readonly local: InProcessBus;
  private readonly outbox: { channel: string; payload: string }[] = [];
  private dropped = 0;
  private readonly stops: (() => void)[] = [];

  constructor(
    private readonly link: RedisLink,
    private readonly logger: Logger,
  ) {
    this.local = new InProcessBus((err) => logger.error({ err }, 'bus handler failed'));
    // Every topic is listened to from the start: a message from another instance must
    // reach local subscribers that come later (the panel's streams).
    for (const topic of TOPICS) {
      this.stops.push(link.subscribe(this.channel(topic), (raw) => this.onMessage(topic, raw)));
    }
    this.stops.push(link.onRecovery(() => this.flush()));
  }

  get instanceId(): string {
    return this.link.instanceId;
  }

  async publish<T extends Topic>(topic: T, message: BusTopics[T]): Promise<void> {
    await this.local.publish(topic, message);
    const channel = this.channel(topic);
    const payload = JSON.stringify({ origin: this.link.instanceId, message });
    // Older messages go first, so the order seen by other instances is the order sent.
    if (this.outbox.length > 0 || !(await this.link.publish(channel, payload))) this.keep(channel, payload);
  }

  subscribe<T extends Topic>(topic: T, handler: (message: BusTopics[T]) => void): () => void {
    return this.local.subscribe(topic, handler);
  }

  /** Resolves once Redis is reachable and this bus's subscriptions are confirmed. */
  async ready(): Promise<void> {
    await this.link.whenHealthy();
  }

  /** Messages waiting for Redis to come back. */
  get waiting(): number {
    return this.outbox.length;
  }

  async close(): Promise<void> {
    for (const s of this.stops.splice(0)) s();
    await this.local.close();
  }

  private channel(topic: Topic): string {
    return this.link.key(`bus:${topic}`);
  }

  private keep(channel: string, payload: string): void {
    this.outbox.push({ channel, payload });
    if (this.outbox.length > OUTBOX_LIMIT) {
      this.outbox.shift();
      if (this.dropped++ === 0)
        this.logger.warn({ limit: OUTBOX_LIMIT }, 'bus outbox full while redis is away');
    }
  }

  private flush(): void {
    const batch = this.outbox.splice(0);
    if (this.dropped > 0)
      this.logger.warn({ dropped: this.dropped }, 'bus messages dropped during the redis outage');
    this.dropped = 0;
    if (batch.length > 0)
      this.logger.info({ messages: batch.length }, 'bus messages sent after the redis outage');
    // Issued in one turn, so they reach Redis in order and ahead of anything published later.
    void Promise.all(batch.map((m) => this.link.publish(m.channel, m.payload))).then((sent) => {
      const failed = batch.filter((_m, i) => !sent[i]);
      // Down again: those wait for the next recovery, still first in line.
      if (failed.length > 0) this.outbox.unshift(...failed);
    });
  }

  private onMessage(topic: Topic, raw: string): void {
    try {
      const { origin, message } = JSON.parse(raw) as { origin: string; message: unknown };
      if (origin === this.link.instanceId) return;
      void this.local.publish(topic, message as never);
    } catch (err) {
      this.logger.warn({ err, topic }, 'unreadable bus message from redis');
    }
  }
}
