import type { Kysely } from 'kysely';
import type { Database } from '../storage/schema.js';
import * as repo from '../storage/session-repo.js';
import { fromDbTime, toDbTime, type Clock } from '../storage/values.js';

/** How many wrong passwords are allowed, and over what window. */
export interface ThrottleLimits {
  /** Failures allowed per address, and per username from addresses that failed too, within the window (default 5). */
  maxFailures: number;
  /** Sliding window in milliseconds (default 15 minutes). */
  windowMs: number;
}

export const DEFAULT_THROTTLE: ThrottleLimits = { maxFailures: 5, windowMs: 15 * 60_000 };

export type ThrottleVerdict = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/**
 * Slows password guessing without handing anyone a way to lock the admin out:
 * - per address: after `maxFailures` wrong passwords from one address within `windowMs`,
 *   its attempts are refused (without checking the password) until the oldest failure
 *   leaves the window;
 * - per username: after `maxFailures` failures against one username (from any addresses),
 *   attempts on it are refused only from addresses that have failed themselves within the
 *   window. An address with no failures is always let through to the password check, so
 *   the owner of a correct password is never locked out from a clean address, while a
 *   spread-out guesser gets at most one try per address per window on that username
 *   (OWASP's authentication guidance: no hard lock an attacker can hold forever).
 * Counted in the database so every server instance sees the same counts.
 */
export class LoginThrottle {
  /** Attempts being checked right now, counted as failures so a burst cannot outrun the count. */
  private readonly inflight = new Map<string, number>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly limits: ThrottleLimits = DEFAULT_THROTTLE,
  ) {}

  /**
   * Checks the counts and, when allowed, holds a place until `release` is called (after the
   * failure or success has been recorded).
   */
  async begin(ip: string, username: string): Promise<ThrottleVerdict & { release: () => void }> {
    const keys = [`ip:${ip}`, `user:${username}`];
    for (const k of keys) this.inflight.set(k, (this.inflight.get(k) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      for (const k of keys) {
        const n = (this.inflight.get(k) ?? 1) - 1;
        if (n > 0) this.inflight.set(k, n);
        else this.inflight.delete(k);
      }
    };
    try {
      const verdict = await this.check(ip, username, 1);
      if (!verdict.allowed) release();
      return { ...verdict, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** `self` attempts of the caller's own are already in the in-flight counts. */
  async check(ip: string, username: string, self = 0): Promise<ThrottleVerdict> {
    const now = this.clock.now().getTime();
    const since = toDbTime(new Date(now - this.limits.windowMs), true);
    let wait = 0;
    let addressFailed = false;
    for (const [by, value] of [
      ['ip', ip],
      ['username', username],
    ] as const) {
      const times = await repo.recentLoginFailures(this.db, by, value, since);
      const pending = (this.inflight.get(`${by === 'ip' ? 'ip' : 'user'}:${value}`) ?? 0) - self;
      // Attempts from this address still being checked count as failures of it (a burst).
      if (by === 'ip') addressFailed = times.length + pending > 0;
      else if (!addressFailed) continue;
      if (times.length + pending < this.limits.maxFailures) continue;
      if (times.length < this.limits.maxFailures) {
        // Held back only by attempts in flight: they finish within a second or so.
        wait = Math.max(wait, 1);
        continue;
      }
      // Allowed again once enough failures have aged out to leave maxFailures - 1.
      const pivot = times[times.length - this.limits.maxFailures] as string;
      const until = Date.parse(fromDbTime(pivot) as string) + this.limits.windowMs;
      wait = Math.max(wait, Math.ceil((until - now) / 1000));
    }
    return wait > 0 ? { allowed: false, retryAfterSeconds: wait } : { allowed: true };
  }

  async recordFailure(ip: string, username: string): Promise<void> {
    const now = this.clock.now().getTime();
    await repo.deleteOldLoginFailures(this.db, toDbTime(new Date(now - this.limits.windowMs), true));
    await repo.insertLoginFailure(this.db, {
      at: toDbTime(new Date(now), true),
      ip: ip.slice(0, 64),
      username: username.slice(0, 255),
    });
  }

  async recordSuccess(ip: string, username: string): Promise<void> {
    await repo.clearLoginFailures(this.db, ip.slice(0, 64), username.slice(0, 255));
  }
}
