import type { TaskData } from '../../api/protocol.js';

/** Free-form metrics a task reports (loss, accuracy, ...). */
export type Metrics = Record<string, unknown>;

/** What an executor is given to run one task. */
export interface ExecutionContext {
  task: TaskData;
  /** Base URL of the HTTP API; commands see it as AI_FARM_SERVER. */
  serverUrl: string;
  /** Every progress report, 0-100 (the worker throttles what it sends); `round` for training tasks. */
  onProgress(progress: number, metrics?: Metrics, round?: number): void;
  /** Output that is not a progress report, line by line. */
  onOutput?(line: string, stream: 'stdout' | 'stderr'): void;
  /** The worker's token, for model downloads and uploads (never given to commands). */
  token?: string | undefined;
  /** This client's id, sent as X-AI-Farm-Client with uploads. */
  clientId?: string | undefined;
  /**
   * Trains this many times slower (>= 1; default 1): after each round's local training the
   * training loop waits (slowdown - 1) times as long as it took. `ai-farm worker --slowdown`,
   * for trying stragglers (`ai-farm demo --stragglers`).
   */
  slowdown?: number | undefined;
}

/**
 * A message about a training task's rounds, passed on to its execution: `round_start`,
 * `training_complete`, or the `task` itself sent again (after a reconnection) with the
 * current `training` state. Fields as in docs/training.md; the executor validates them.
 */
export type TrainingEvent =
  | ({ type: 'round_start' | 'training_complete' } & Record<string, unknown>)
  | { type: 'task'; data: TaskData };

/** How a task's execution ended. Maps onto task_result. */
export interface ExecutionOutcome {
  /** completed; failed (the task's own work failed or was stopped); error (it could not run). */
  status: 'completed' | 'failed' | 'error';
  /** The latest metrics reported. */
  metrics?: Metrics | undefined;
  result?: Record<string, unknown> | undefined;
  error_log?: string | undefined;
  /** Set when stop() ended it; the worker then decides whether to report it. */
  stopped?: boolean | undefined;
}

/** One running task. */
export interface Execution {
  /** Settles once, when the task has ended and its processes are gone; never rejects. */
  readonly done: Promise<ExecutionOutcome>;
  /** Suspends the work where it is (the task stays assigned). */
  pause(): void;
  resume(): void;
  /**
   * Ends the work; resolves like `done`, with `stopped: true` unless it had already ended.
   * `graceMs` bounds how long the work may take to wind down (0: kill now); calling again
   * with a shorter grace hurries a stop already under way.
   */
  stop(graceMs?: number): Promise<ExecutionOutcome>;
  /** Training tasks only: a round_start, training_complete or re-sent task for this task. */
  deliver?(event: TrainingEvent): void;
}

/**
 * Pause and resume for work that runs an inner execution which may not have started yet, or
 * one after another (a round's command, code still being fetched): the pause outlives each
 * inner execution, and the next one starts paused while it holds.
 */
export class PauseRelay {
  private paused = false;
  private inner: Execution | undefined;

  /** The inner execution now running (undefined: none); it is paused at once if a pause holds. */
  set current(inner: Execution | undefined) {
    this.inner = inner;
    if (inner && this.paused) inner.pause();
  }

  get current(): Execution | undefined {
    return this.inner;
  }

  pause(): void {
    this.paused = true;
    this.inner?.pause();
  }

  resume(): void {
    this.paused = false;
    this.inner?.resume();
  }
}

/**
 * Runs tasks of one type. The extension point of the worker: register an executor for a
 * task type in an ExecutorRegistry and workers built with it advertise that type.
 */
export interface Executor {
  start(ctx: ExecutionContext): Execution;
}

/** Task type -> executor. The worker advertises its keys as task_types. */
export class ExecutorRegistry {
  private readonly byType = new Map<string, Executor>();

  register(type: string, executor: Executor): this {
    this.byType.set(type, executor);
    return this;
  }

  get(type: string): Executor | undefined {
    return this.byType.get(type);
  }

  types(): string[] {
    return [...this.byType.keys()];
  }
}

/** An execution that is over before it starts (bad configuration, unknown type). */
export function finishedExecution(outcome: ExecutionOutcome): Execution {
  const done = Promise.resolve(outcome);
  return { done, pause: () => undefined, resume: () => undefined, stop: () => done };
}
