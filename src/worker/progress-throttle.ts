/** A progress report as the throttle passes it on. */
export interface ProgressSample {
  progress: number;
  metrics?: Record<string, unknown> | undefined;
  /** The round of a training task. */
  round?: number | undefined;
}

/**
 * Passes on at most one report per `intervalMs` (default 250 ms: about 4 a second),
 * and never drops the latest: a report that arrives too soon is held and sent when the
 * interval is over, replaced by any newer one meanwhile. `flush()` sends a held report
 * at once (call it before the task's result, so the last progress is not lost).
 */
export class ProgressThrottle {
  private lastSent = -Infinity;
  private held: ProgressSample | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly send: (sample: ProgressSample) => void,
    private readonly intervalMs = 250,
    private readonly now: () => number = Date.now,
  ) {}

  push(sample: ProgressSample): void {
    const wait = this.lastSent + this.intervalMs - this.now();
    if (wait <= 0 && !this.timer) {
      this.emit(sample);
      return;
    }
    this.held = sample;
    this.timer ??= setTimeout(() => this.flush(), Math.max(0, wait));
  }

  /** Sends the held report, if any, now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const held = this.held;
    this.held = undefined;
    if (held) this.emit(held);
  }

  /** Drops a held report (the task was stopped or reassigned). */
  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.held = undefined;
  }

  private emit(sample: ProgressSample): void {
    this.lastSent = this.now();
    this.send(sample);
  }
}
