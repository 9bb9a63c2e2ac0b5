import { touchClients, type ClientTouch } from '../storage/client-repo.js';
import { toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import type { ClientRegistry } from './registry.js';

/** How often the clients heard from are written, ms: `last_seen` in the database lags by at most this. */
export const CLIENT_TOUCH_MS = 2000;

export interface HeartbeatWriterDeps {
  registry: ClientRegistry;
  writes: WriteQueue;
  clock: Clock;
}

/**
 * Writes what the registry knows live about connected clients — when each was last heard
 * from (any message or pong) and its latest heartbeat utilization — to their rows, every
 * CLIENT_TOUCH_MS for all the clients heard from since the previous pass, with one
 * statement per few hundred clients and one commit. One `UPDATE` per heartbeat instead was
 * the larger part of an idle farm's work (333/s with 10,000 workers beating every 30 s).
 *
 * The registry is the truth for connected clients (the gateway's timeout works from it);
 * the row's `last_seen` is for display and for after a disconnect, which writes it exactly.
 */
export class HeartbeatWriter {
  /** Clients heard from at or after this time (ms since the epoch) are written next pass. */
  private since = 0;
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly d: HeartbeatWriterDeps,
    private readonly everyMs = CLIENT_TOUCH_MS,
  ) {}

  /** Writes every CLIENT_TOUCH_MS from now on; `onError` hears of a failed pass (the next one retries). */
  start(onError: (err: unknown) => void): void {
    this.timer ??= setInterval(() => void this.flush().catch(onError), this.everyMs);
    this.timer.unref();
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
    await this.flush();
  }

  /** Writes the connected clients heard from since the previous pass (one pass at a time). */
  flush(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = null));
    return this.running;
  }

  private async pass(): Promise<void> {
    const since = this.since;
    const now = this.d.clock.now().getTime();
    const touches: ClientTouch[] = [];
    for (const c of this.d.registry.all()) {
      if (!c.send || c.lastSeen < since) continue;
      touches.push({
        id: c.id,
        last_seen: toDbTime(new Date(c.lastSeen)),
        utilization: c.utilization ? JSON.stringify(c.utilization) : null,
      });
    }
    // A client heard from during the walk, at `now`, is written again next pass: none is missed.
    this.since = now;
    if (touches.length === 0) return;
    try {
      await this.d.writes.run((trx) => touchClients(trx, touches));
    } catch (err) {
      // Not written: the next pass takes them again.
      this.since = Math.min(this.since, since);
      throw err;
    }
  }
}
