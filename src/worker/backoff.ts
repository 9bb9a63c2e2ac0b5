/** How a reconnecting client spaces its attempts. Every field has a default. */
export interface BackoffOptions {
  /** First delay, ms. Default 500. */
  initialMs?: number;
  /** Upper bound of any delay, ms. Default 30 000. */
  maxMs?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /**
   * Share of each delay that is random, 0..1. Default 0.5: a delay lies in [base/2, base],
   * so a farm of workers cut off together does not come back in lockstep.
   */
  jitter?: number;
  /** Source of randomness in [0, 1); tests pass a fixed one. Default Math.random. */
  random?: () => number;
}

/**
 * Exponential backoff with jitter, bounded by `maxMs`. Pure: it computes delays and keeps
 * the attempt count; the caller owns the timers. Call `reset()` once a connection has
 * proved stable, so a worker that ran for hours does not wait 30 s after its first drop.
 */
export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;
  private failures = 0;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = Math.max(0, opts.initialMs ?? 500);
    this.maxMs = Math.max(this.initialMs, opts.maxMs ?? 30_000);
    this.factor = Math.max(1, opts.factor ?? 2);
    this.jitter = Math.min(1, Math.max(0, opts.jitter ?? 0.5));
    this.random = opts.random ?? Math.random;
  }

  /** Attempts made since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  /** The delay before the next attempt, ms; counts the attempt. */
  next(): number {
    // Cap the exponent so a long outage cannot overflow to Infinity.
    const exp = Math.min(this.failures, 64);
    const base = Math.min(this.maxMs, this.initialMs * this.factor ** exp);
    this.failures++;
    return Math.round(base * (1 - this.jitter * this.random()));
  }

  reset(): void {
    this.failures = 0;
  }
}
