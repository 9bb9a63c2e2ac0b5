import type { PanelEvents, PanelEventName } from '../api/overview.js';
import type { Bus } from '../bus/bus.js';
import type { Logger } from '../observability/logger.js';
import type { OverviewService } from './overview-service.js';

/** One open live stream (an SSE response). */
export interface EventSink {
  send<E extends PanelEventName>(event: E, data: PanelEvents[E]): void;
  close(): void;
  /** Whether its credentials still hold (session not logged out, token not revoked). */
  stillValid(): Promise<boolean>;
}

export interface EventHubOptions {
  /** Overview ticks and throughput samples, ms (default 5000). */
  tickMs?: number;
  /** Task and client changes are batched this long, latest state per id wins (default 250). */
  coalesceMs?: number;
  /** After a change, the overview is recomputed at most this often, ms (default 1000). */
  overviewDebounceMs?: number;
}

/**
 * Fans bus events out to the admin panel's live streams. A worker reporting progress after
 * every batch would otherwise flood each browser: changes are coalesced per task and per
 * client, and the overview (a few database counts) is computed once for all streams.
 */
export class EventHub {
  private readonly sinks = new Set<EventSink>();
  private readonly pendingTasks = new Map<number, PanelEvents['task']>();
  private readonly pendingClients = new Map<string, PanelEvents['client']>();
  private readonly unsubscribe: (() => void)[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private overviewTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private ticking = false;
  private closed = false;
  private readonly tickMs: number;
  private readonly coalesceMs: number;
  private readonly overviewDebounceMs: number;

  constructor(
    private readonly bus: Bus,
    private readonly overview: OverviewService,
    private readonly logger: Logger,
    opts: EventHubOptions = {},
  ) {
    this.tickMs = opts.tickMs ?? 5000;
    this.coalesceMs = opts.coalesceMs ?? 250;
    this.overviewDebounceMs = opts.overviewDebounceMs ?? 1000;
  }

  /** Subscribes to the bus and starts sampling throughput (even with nobody watching, for history). */
  start(): void {
    this.unsubscribe.push(
      // Nobody watching: nothing to coalesce (a busy farm changes thousands of tasks a second).
      this.bus.subscribe('task.changed', (m) => {
        if (this.sinks.size === 0) return;
        this.pendingTasks.set(m.task_id, { ...this.pendingTasks.get(m.task_id), ...m });
        this.changed();
      }),
      this.bus.subscribe('client.changed', (m) => {
        if (this.sinks.size === 0) return;
        this.pendingClients.set(m.client_id, { ...this.pendingClients.get(m.client_id), ...m });
        this.changed();
      }),
    );
    void this.tick();
    this.tickTimer = setInterval(() => void this.tick(), this.tickMs);
    this.tickTimer.unref();
  }

  /** Adds a stream: it gets the full overview at once, then every change. */
  async add(sink: EventSink): Promise<() => void> {
    this.sinks.add(sink);
    try {
      sink.send('overview', { ...(await this.overview.current()), full: true });
    } catch (err) {
      this.logger.warn({ err }, 'overview for a new live stream failed');
    }
    return () => this.sinks.delete(sink);
  }

  get size(): number {
    return this.sinks.size;
  }

  /** Ends every stream and stops the timers; called before the HTTP server closes. */
  close(): void {
    this.closed = true;
    for (const u of this.unsubscribe.splice(0)) u();
    for (const t of [this.flushTimer, this.overviewTimer]) if (t) clearTimeout(t);
    if (this.tickTimer) clearInterval(this.tickTimer);
    for (const s of this.sinks) s.close();
    this.sinks.clear();
  }

  private changed(): void {
    if (this.closed || this.sinks.size === 0) {
      this.pendingTasks.clear();
      this.pendingClients.clear();
      return;
    }
    this.flushTimer ??= setTimeout(() => this.flush(), this.coalesceMs);
    this.overviewTimer ??= setTimeout(() => void this.refreshOverview(), this.overviewDebounceMs);
  }

  private flush(): void {
    this.flushTimer = undefined;
    const tasks = [...this.pendingTasks.values()];
    const clients = [...this.pendingClients.values()];
    this.pendingTasks.clear();
    this.pendingClients.clear();
    for (const sink of this.sinks) {
      for (const t of tasks) sink.send('task', t);
      for (const c of clients) sink.send('client', c);
    }
  }

  private async refreshOverview(): Promise<void> {
    this.overviewTimer = undefined;
    if (this.closed || this.sinks.size === 0) return;
    try {
      const snap = await this.overview.snapshot();
      for (const sink of this.sinks) sink.send('overview', { ...snap, throughput: [], full: false });
    } catch (err) {
      this.logger.warn({ err }, 'overview refresh failed');
    }
  }

  /** Samples throughput, sends the overview and drops streams whose login has ended. */
  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      const ov = await this.overview.sample();
      for (const sink of [...this.sinks]) {
        if (!(await sink.stillValid().catch(() => true))) {
          this.sinks.delete(sink);
          sink.close();
          continue;
        }
        sink.send('overview', { ...ov, full: false });
      }
    } catch (err) {
      // A tick caught by shutdown (database closing) is not worth a warning.
      if (!this.closed) this.logger.warn({ err }, 'overview tick failed');
    } finally {
      this.ticking = false;
    }
  }
}
