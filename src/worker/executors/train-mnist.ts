/**
 * The `train_mnist` executor: the built-in trainer (src/mnist/, a small MLP on the
 * `mnist` package's digits) run in the training round loop. Each round trains `epochs`
 * local epochs on this rank's shard in a worker thread, so heartbeats flow freely and a
 * pause holds training mid-epoch.
 *
 * Config keys read (docs/training.md): rounds, epochs, batch_size, shards, seed, and
 * optionally lr, optimizer ("sgd" | "adam"), momentum, hidden, and mu (or aggregation.mu
 * with strategy fedprox) for FedProx's proximal term.
 */
import type { TaskData } from '../../api/protocol.js';
import type { TrainProgress } from '../../mnist/index.js';
import { MnistThread, type ThreadTrainOptions } from './train-mnist-thread.js';
import {
  isTrainingTask,
  shardOf,
  startTrainingLoop,
  type RoundResult,
  type RoundTrainer,
  type RoundWork,
  type TrainingLoopOptions,
} from './training-loop.js';
import { finishedExecution, type Execution, type ExecutionContext, type Executor } from './types.js';

/** Defaults when the task's config leaves them out (the server normally fills epochs and batch_size). */
const DEFAULTS = { epochs: 1, batchSize: 32 };

/** The trainer options every round of a task shares, read from its config. */
export function mnistTrainOptions(task: TaskData): Omit<ThreadTrainOptions, 'outPath'> | string {
  const c = task.config;
  const shard = shardOf(task);
  if (typeof shard === 'string') return shard;
  const int = (v: unknown, name: string, fallback: number, min: number): number | string => {
    if (v === undefined) return fallback;
    return typeof v === 'number' && Number.isInteger(v) && v >= min
      ? v
      : `config.${name} must be an integer >= ${min}`;
  };
  const positive = (v: unknown, name: string): number | undefined | string => {
    if (v === undefined) return undefined;
    return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : `config.${name} must be a number >= 0`;
  };
  const aggregation =
    c.aggregation && typeof c.aggregation === 'object' ? (c.aggregation as Record<string, unknown>) : {};
  const values = {
    epochs: int(c.epochs, 'epochs', DEFAULTS.epochs, 1),
    batchSize: int(c.batch_size, 'batch_size', DEFAULTS.batchSize, 1),
    seed: int(c.seed, 'seed', 0, -(2 ** 31)),
    hidden: int(c.hidden, 'hidden', 128, 1),
    lr: positive(c.lr, 'lr'),
    momentum: positive(c.momentum, 'momentum'),
    mu: positive(c.mu ?? (aggregation.strategy === 'fedprox' ? aggregation.mu : undefined), 'mu'),
  };
  for (const v of Object.values(values)) if (typeof v === 'string') return v;
  const optimizer = c.optimizer ?? 'sgd';
  if (optimizer !== 'sgd' && optimizer !== 'adam') return 'config.optimizer must be "sgd" or "adam"';
  const { epochs, batchSize, seed, hidden, lr, momentum, mu } = values as {
    [K in keyof typeof values]: Exclude<(typeof values)[K], string>;
  };
  return {
    epochs,
    batchSize,
    seed,
    hidden,
    optimizer,
    shard: shard.even ?? { start: shard.start, end: shard.end },
    ...(lr === undefined ? {} : { lr }),
    ...(momentum === undefined ? {} : { momentum }),
    ...(mu === undefined ? {} : { mu }),
  };
}

/** Progress of a round, 0..1, and the metrics the worker reports. */
function roundProgress(
  p: TrainProgress,
  epochs: number,
): { fraction: number; metrics: Record<string, number> } {
  const done = p.epoch * p.totalBatches + p.batch + 1;
  return {
    fraction: done / (epochs * p.totalBatches),
    metrics: {
      loss: p.loss,
      accuracy: p.accuracy,
      current_epoch: p.epoch + 1,
      total_epochs: epochs,
      current_batch: p.batch + 1,
      total_batches: p.totalBatches,
    },
  };
}

/** Trains rounds of a `train_mnist` task in a {@link MnistThread}. */
class MnistRoundTrainer implements RoundTrainer {
  private readonly thread = new MnistThread();

  constructor(private readonly base: Omit<ThreadTrainOptions, 'outPath'>) {}

  async runRound(work: RoundWork): Promise<RoundResult> {
    const onAbort = () => this.thread.abort();
    work.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const epochs = this.base.epochs;
      const options: ThreadTrainOptions = {
        ...this.base,
        outPath: work.outPath,
        // Without a global model every rank initialises the same weights from the seed;
        // with one, the seed only orders the batches, so vary it by round.
        seed: (this.base.seed ?? 0) + (work.globalPath === null ? 0 : work.round - 1),
        ...(work.globalPath === null ? {} : { weightsPath: work.globalPath }),
      };
      const outcome = await this.thread.train(options, (p) => {
        const { fraction, metrics } = roundProgress(p, epochs);
        work.onProgress(fraction, metrics);
      });
      if (outcome.ok) {
        return {
          ok: true,
          numSamples: outcome.numSamples,
          metrics: { loss: outcome.loss, accuracy: outcome.accuracy },
        };
      }
      const status =
        outcome.code === 'invalid_weights' || outcome.code === 'invalid_options' ? 'failed' : 'error';
      return { ok: false, status, message: `${outcome.code}: ${outcome.message}` };
    } finally {
      work.signal.removeEventListener('abort', onAbort);
    }
  }

  pause(): void {
    this.thread.pause();
  }

  resume(): void {
    this.thread.resume();
  }

  stop(): void {
    this.thread.abort();
  }

  close(): Promise<void> {
    return this.thread.close();
  }
}

/**
 * Runs `train_mnist` tasks: distributed ones (config.rounds) through the round loop. A task
 * without rounds is refused: the built-in trainer only makes sense with a server that
 * aggregates its updates.
 */
export class TrainMnistExecutor implements Executor {
  constructor(private readonly opts: TrainingLoopOptions = {}) {}

  start(ctx: ExecutionContext): Execution {
    if (!isTrainingTask(ctx.task)) {
      return finishedExecution({
        status: 'error',
        error_log: 'train_mnist needs config.rounds (a training task)',
      });
    }
    const base = mnistTrainOptions(ctx.task);
    if (typeof base === 'string') return finishedExecution({ status: 'error', error_log: base });
    return startTrainingLoop(ctx, new MnistRoundTrainer(base), {
      tmpPrefix: `ai-farm-mnist-${ctx.task.id}-`,
      ...this.opts,
    });
  }
}
