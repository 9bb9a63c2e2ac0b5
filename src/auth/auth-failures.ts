import type { Rate } from '../config/rate.js';
import type { Clock } from '../storage/values.js';

/** Addresses tracked at most; past it, expired entries are swept and then the oldest dropped. */
const MAX_TRACKED = 10_000;

/**
 * Failed token checks per client address, on the ports RATE_LIMIT does not cover (the
 * WebSocket upgrade, the model server). Past `rate.max` failures in a window, the address is
 * refused before its token is even looked up (an unknown token costs a database read) until
 * the window ends. Fixed windows, in memory, per server instance: cheap enough to consult on
 * every attempt, and bounded in size whatever the number of addresses.
 */
export class AuthFailures {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    /** null: not counted (MAX_AUTH_FAILURES=off). */
    private readonly rate: Rate | null,
    private readonly clock: Clock,
  ) {}

  /** Seconds until `address` may try again; 0 when it may now. */
  retryAfter(address: string): number {
    if (!this.rate) return 0;
    const w = this.windows.get(address);
    const now = this.clock.now().getTime();
    if (!w || now - w.start >= this.rate.windowMs || w.count < this.rate.max) return 0;
    return Math.max(1, Math.ceil((w.start + this.rate.windowMs - now) / 1000));
  }

  /** Counts one failed authentication from `address`. */
  record(address: string): void {
    if (!this.rate) return;
    const now = this.clock.now().getTime();
    const w = this.windows.get(address);
    if (w && now - w.start < this.rate.windowMs) {
      w.count++;
      return;
    }
    this.windows.delete(address);
    this.windows.set(address, { start: now, count: 1 });
    if (this.windows.size > MAX_TRACKED) this.prune(now);
  }

  /** The message of a refusal, naming the limit. */
  describe(address: string): string {
    return `too many failed authentications from this address (MAX_AUTH_FAILURES=${this.rate?.max ?? 0} per ${(this.rate?.windowMs ?? 0) / 1000} s); retry in ${this.retryAfter(address)} s`;
  }

  private prune(now: number): void {
    const windowMs = this.rate?.windowMs ?? 0;
    for (const [address, w] of this.windows) if (now - w.start >= windowMs) this.windows.delete(address);
    // Insertion order is age order: the oldest windows go first.
    for (const address of this.windows.keys()) {
      if (this.windows.size <= MAX_TRACKED) break;
      this.windows.delete(address);
    }
  }
}
