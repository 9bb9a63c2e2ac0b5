/**
 * The round loop of a training task (docs/training.md), shared by the executors that train:
 * `train_mnist` (the built-in trainer) and `command` tasks with config.rounds. For each round
 * it downloads the global model, has a {@link RoundTrainer} train on this rank's shard,
 * uploads the update, reports progress, and waits for the next `round_start` or for
 * `training_complete`. Pause holds it (the trainer holds mid-epoch), stop ends it, and the
 * per-task temporary directory is removed whatever happens.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { TaskData } from '../../api/protocol.js';
import { downloadModel, uploadUpdate, type TransferOptions } from './model-transfer.js';
import type { Execution, ExecutionContext, ExecutionOutcome, Metrics, TrainingEvent } from './types.js';

/** A round as the server describes it: `data.training` of the task, or a `round_start`. */
export const TrainingState = Type.Object({
  round: Type.Integer({ minimum: 1 }),
  rounds: Type.Integer({ minimum: 1 }),
  global_model_url: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
  upload_url: Type.String({ minLength: 1 }),
  deadline_at: Type.Optional(Type.Unknown()),
  attempt: Type.Optional(Type.Integer({ minimum: 1 })),
  rank: Type.Optional(Type.Integer({ minimum: 0 })),
  /** This rank's update of this round is already accepted (a task sent again): wait. */
  accepted: Type.Optional(Type.Boolean()),
});
export type TrainingState = Static<typeof TrainingState>;

/** A task is a training task when its config has `rounds`. */
export function isTrainingTask(task: TaskData): boolean {
  return task.config.rounds !== undefined;
}

/** The `training` state of a task message, or the problem with it. */
export function trainingStateOf(task: TaskData): TrainingState | string {
  const training = (task as TaskData & { training?: unknown }).training;
  if (training === undefined || training === null) {
    return 'the task has config.rounds but no data.training: the server does not run training rounds';
  }
  if (!Value.Check(TrainingState, training)) {
    const e = Value.Errors(TrainingState, training).First();
    return `invalid data.training${e ? ` (${e.path || '/'}: ${e.message})` : ''}`;
  }
  return training;
}

/** This rank's part of the training data: fractions [start, end) of it, and the rank's slot. */
export interface TaskShard {
  start: number;
  end: number;
  /** Set for `shards: "even"`: rank r of world_size. */
  even?: { rank: number; worldSize: number } | undefined;
}

/** Reads config.shards ("even", the default, or one [start, end] fraction range per rank). */
export function shardOf(task: TaskData): TaskShard | string {
  const { rank, world_size: worldSize } = task;
  const shards = task.config.shards ?? 'even';
  if (shards === 'even') {
    return { start: rank / worldSize, end: (rank + 1) / worldSize, even: { rank, worldSize } };
  }
  const mine: unknown = Array.isArray(shards) ? shards[rank] : undefined;
  if (
    Array.isArray(mine) &&
    mine.length === 2 &&
    typeof mine[0] === 'number' &&
    typeof mine[1] === 'number' &&
    mine[0] >= 0 &&
    mine[0] < mine[1] &&
    mine[1] <= 1
  ) {
    return { start: mine[0], end: mine[1] };
  }
  return `config.shards must be "even" or one [start, end] fraction range per rank (none valid for rank ${rank})`;
}

/** One round's local work, as the loop hands it to a trainer. */
export interface RoundWork {
  round: number;
  rounds: number;
  /** The downloaded global model; null in round 1 (initialise from config.seed). */
  globalPath: string | null;
  /** Where the update must be written. */
  outPath: string;
  /** The task's temporary directory. */
  dir: string;
  /** Ends the round early (stopped, or overtaken by a newer round). */
  signal: AbortSignal;
  /** Progress within the round, 0..1, with the latest metrics (loss, accuracy...). */
  onProgress(fraction: number, metrics?: Metrics): void;
}

/** What a round produced: the FedAvg weight and metrics, or why it failed. */
export type RoundResult =
  | { ok: true; numSamples: number; metrics: Metrics }
  | { ok: false; status: 'failed' | 'error'; message: string };

/** The part of a training executor that trains; the loop does the rest. */
export interface RoundTrainer {
  runRound(work: RoundWork): Promise<RoundResult>;
  /** Holds the round in progress where it is (and the next ones until resume). */
  pause(): void;
  resume(): void;
  /** Ends the round in progress for good, within `graceMs` (0: at once; default the trainer's). */
  stop(graceMs?: number): void;
  /** Releases what the trainer holds (threads, processes); called once, at the end. */
  close(): Promise<void>;
}

/** Options of {@link startTrainingLoop}. */
export interface TrainingLoopOptions {
  /** Prefix of the temporary directory. Default 'ai-farm-task-'. */
  tmpPrefix?: string;
  /** Passed on to model downloads and uploads (retries, timeouts). */
  transfer?: Partial<TransferOptions>;
}

/** Starts a training task's round loop. */
export function startTrainingLoop(
  ctx: ExecutionContext,
  trainer: RoundTrainer,
  opts: TrainingLoopOptions = {},
): Execution {
  return new TrainingRun(ctx, trainer, opts);
}

/** Numbers only: what X-AI-Farm-Metrics carries. */
function numericMetrics(m: Metrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  return out;
}

class TrainingRun implements Execution {
  readonly done: Promise<ExecutionOutcome>;
  private readonly abort = new AbortController();
  /** Aborts the round in progress only (a newer round or the end overtook it). */
  private roundAbort = new AbortController();
  private paused = false;
  private resumeWaiters: (() => void)[] = [];
  private eventWaiter: (() => void) | undefined;
  /** The newest round announced, and the end once announced. */
  private announced: TrainingState | undefined;
  private complete: Record<string, unknown> | undefined;
  private current = 0;
  private metrics: Metrics = {};

  constructor(
    private readonly ctx: ExecutionContext,
    private readonly trainer: RoundTrainer,
    private readonly opts: TrainingLoopOptions,
  ) {
    this.done = this.run().catch((err: unknown) => ({
      status: 'error' as const,
      error_log: `training loop failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    }));
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.trainer.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.trainer.resume();
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  stop(graceMs?: number): Promise<ExecutionOutcome> {
    // Called again with a shorter grace, it hurries a stop under way.
    this.trainer.stop(graceMs);
    this.abort.abort(new Error('stopped'));
    this.roundAbort.abort(new Error('stopped'));
    this.wake();
    for (const w of this.resumeWaiters.splice(0)) w();
    return this.done;
  }

  deliver(event: TrainingEvent): void {
    if (event.type === 'training_complete') {
      this.complete = event;
    } else {
      const state = event.type === 'task' ? (event.data as { training?: unknown }).training : event;
      if (!Value.Check(TrainingState, state)) return;
      if (state.round <= (this.announced?.round ?? 0)) return;
      this.announced = state;
    }
    // A newer round or the end makes the round in progress pointless.
    if (this.complete || (this.announced && this.announced.round > this.current)) {
      if (this.current > 0) this.roundAbort.abort(new Error('superseded'));
    }
    this.wake();
  }

  private wake(): void {
    const w = this.eventWaiter;
    this.eventWaiter = undefined;
    w?.();
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<ExecutionOutcome> {
    const { task } = this.ctx;
    const first = trainingStateOf(task);
    if (typeof first === 'string') return { status: 'error', error_log: first };
    this.announced = first;
    let dir: string | undefined;
    try {
      dir = await mkdtemp(join(tmpdir(), this.opts.tmpPrefix ?? `ai-farm-task-${task.id}-`));
      for (;;) {
        const next = await this.nextRound();
        if (next === 'stopped') return this.stoppedOutcome();
        if (next === 'complete') return this.completedOutcome();
        const failure = await this.runRound(next, dir);
        if (failure) return failure;
      }
    } finally {
      await this.trainer.close().catch(() => undefined);
      if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** Waits for a round newer than the last one run, or the end. */
  private async nextRound(): Promise<TrainingState | 'complete' | 'stopped'> {
    for (;;) {
      if (this.stopped) return 'stopped';
      if (this.complete) return 'complete';
      const a = this.announced;
      if (a && a.round > this.current) {
        if (!a.accepted) return a;
        // Already counted (we uploaded it before a reconnection): wait for the next round.
        this.current = a.round;
        continue;
      }
      await new Promise<void>((resolve) => (this.eventWaiter = resolve));
    }
  }

  private async holdWhilePaused(): Promise<void> {
    while (this.paused && !this.stopped) await new Promise<void>((r) => this.resumeWaiters.push(r));
  }

  /** One round: download, train, upload. Returns an outcome only when the task must end. */
  private async runRound(state: TrainingState, dir: string): Promise<ExecutionOutcome | undefined> {
    const { task } = this.ctx;
    this.current = state.round;
    this.roundAbort = new AbortController();
    const signal = AbortSignal.any([this.abort.signal, this.roundAbort.signal]);
    const attempt = state.attempt ?? task.attempt;
    const base = ((state.round - 1) / state.rounds) * 100;
    const share = 100 / state.rounds;
    const report = (fraction: number) =>
      this.ctx.onProgress(base + share * Math.min(1, Math.max(0, fraction)), this.metrics, state.round);
    const transfer: TransferOptions = {
      serverUrl: this.ctx.serverUrl,
      token: this.ctx.token,
      signal,
      onRetry: (what, n, ms) => this.ctx.onOutput?.(`${what}; retry ${n} in ${ms} ms`, 'stderr'),
      ...this.opts.transfer,
    };
    try {
      await this.holdWhilePaused();
      let globalPath: string | null = null;
      if (state.global_model_url !== null) {
        globalPath = join(dir, `global-${state.round}.safetensors`);
        const got = await downloadModel(state.global_model_url, globalPath, transfer);
        if (!got.ok)
          return this.failed(`round ${state.round}: cannot download the global model: ${got.message}`);
      }
      await this.holdWhilePaused();
      signal.throwIfAborted();
      const outPath = join(dir, `update-${state.round}.safetensors`);
      const trainStart = performance.now();
      const result = await this.trainer.runRound({
        round: state.round,
        rounds: state.rounds,
        globalPath,
        outPath,
        dir,
        signal,
        onProgress: (fraction, metrics) => {
          if (signal.aborted) return;
          if (metrics) this.metrics = { ...metrics, round: state.round };
          report(fraction * 0.98);
        },
      });
      signal.throwIfAborted();
      if (!result.ok) return { status: result.status, metrics: this.metrics, error_log: result.message };
      this.metrics = { ...result.metrics, round: state.round };
      const slowdown = this.ctx.slowdown ?? 1;
      if (slowdown > 1) {
        // A straggler on purpose (ai-farm worker --slowdown): the round's training, X times as long.
        const took = (performance.now() - trainStart) / 1000;
        const wait = (slowdown - 1) * took;
        this.ctx.onOutput?.(
          `round ${state.round}: local training took ${took.toFixed(3)} s; --slowdown ${slowdown}: waiting ${wait.toFixed(3)} s more`,
          'stderr',
        );
        await delay(wait * 1000, undefined, { signal });
      }
      await this.holdWhilePaused();
      const sent = await uploadUpdate(
        {
          uploadUrl: state.upload_url,
          file: outPath,
          attempt,
          numSamples: result.numSamples,
          clientId: this.ctx.clientId,
          metrics: numericMetrics(result.metrics),
        },
        transfer,
      );
      if (!sent.ok && sent.status === 409) {
        // The round closed without this update, or the lease moved on: the server says what next.
        this.ctx.onOutput?.(`round ${state.round}: update not taken (${sent.message})`, 'stderr');
      } else if (!sent.ok) {
        return this.failed(
          `round ${state.round}: upload refused (${sent.status} ${sent.code}): ${sent.message}`,
        );
      } else {
        report(1);
      }
      await rm(globalPath ?? outPath, { force: true });
      await rm(outPath, { force: true });
      return undefined;
    } catch (err) {
      // Aborted: stopped (the loop notices) or overtaken by a newer round (it starts that one):
      // e.g. an over-selected round closed on the first K updates without this one.
      if (!signal.aborted) throw err;
      if (!this.stopped) {
        const why = this.complete ? 'training complete' : `round ${this.announced?.round ?? '?'} started`;
        this.ctx.onOutput?.(`round ${state.round} abandoned: ${why}`, 'stderr');
      }
      return undefined;
    }
  }

  private failed(message: string): ExecutionOutcome {
    return { status: 'failed', metrics: this.metrics, error_log: message };
  }

  private stoppedOutcome(): ExecutionOutcome {
    return { status: 'failed', stopped: true, metrics: this.metrics, error_log: 'stopped by request' };
  }

  private completedOutcome(): ExecutionOutcome {
    const c = this.complete ?? {};
    const result: Record<string, unknown> = {
      rounds: c.rounds ?? this.current,
      rounds_trained: this.current,
    };
    if (typeof c.model_url === 'string') result.model_url = c.model_url;
    return { status: 'completed', metrics: this.metrics, result };
  }
}
