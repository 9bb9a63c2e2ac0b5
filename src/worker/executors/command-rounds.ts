/**
 * `command` tasks with config.rounds: the command runs once per round inside the training
 * round loop. The worker downloads the global model and uploads the update; the command
 * only reads and writes files, under this contract (examples/pytorch/README.md):
 *
 * - AI_FARM_MODEL_IN: the global model (safetensors) to start from; unset in round 1
 *   (initialise from AI_FARM_SEED, the same on every rank);
 * - AI_FARM_MODEL_OUT: where to write the update (safetensors, same tensor names, dtypes
 *   and shapes as the global model);
 * - AI_FARM_ROUND (1-based), AI_FARM_ROUNDS, AI_FARM_SEED, AI_FARM_SHARD_START and
 *   AI_FARM_SHARD_END (this rank's fraction [start, end) of the data), besides the
 *   AI_FARM_RANK, AI_FARM_WORLD_SIZE, AI_FARM_EPOCHS and AI_FARM_BATCH_SIZE every command sees;
 * - stdout: JSON lines `{"progress": 0-100 of this round, "metrics": {"loss": ..}}`, and a
 *   last `{"result": {"num_samples": N}}` (N weighs the update in FedAvg); exit 0.
 */
import { stat } from 'node:fs/promises';
import {
  shardOf,
  startTrainingLoop,
  type RoundResult,
  type RoundTrainer,
  type RoundWork,
} from './training-loop.js';
import {
  finishedExecution,
  PauseRelay,
  type Execution,
  type ExecutionContext,
  type Metrics,
} from './types.js';

/** Starts one run of the task's command with extra environment (CommandExecutor.start). */
export interface CommandStarter {
  start(ctx: ExecutionContext, roundEnv: Record<string, string>): Execution;
}

/** Runs a `command` training task: its command once per round. */
export function startCommandRounds(ctx: ExecutionContext, starter: CommandStarter): Execution {
  const shard = shardOf(ctx.task);
  if (typeof shard === 'string') return finishedExecution({ status: 'error', error_log: shard });
  const seed = ctx.task.config.seed;
  const env = {
    AI_FARM_SHARD_START: String(shard.start),
    AI_FARM_SHARD_END: String(shard.end),
    AI_FARM_SEED: String(typeof seed === 'number' ? seed : 0),
  };
  return startTrainingLoop(ctx, new CommandRoundTrainer(ctx, starter, env), {
    tmpPrefix: `ai-farm-cmd-${ctx.task.id}-`,
  });
}

class CommandRoundTrainer implements RoundTrainer {
  /** The round's command while it runs. */
  private readonly command = new PauseRelay();

  constructor(
    private readonly ctx: ExecutionContext,
    private readonly starter: CommandStarter,
    private readonly env: Record<string, string>,
  ) {}

  async runRound(work: RoundWork): Promise<RoundResult> {
    const roundEnv: Record<string, string> = {
      ...this.env,
      AI_FARM_ROUND: String(work.round),
      AI_FARM_ROUNDS: String(work.rounds),
      AI_FARM_MODEL_OUT: work.outPath,
    };
    if (work.globalPath !== null) roundEnv.AI_FARM_MODEL_IN = work.globalPath;
    let metrics: Metrics = {};
    const run = this.starter.start(
      {
        ...this.ctx,
        onProgress: (progress, m) => {
          if (m) metrics = m;
          work.onProgress(progress / 100, m);
        },
      },
      roundEnv,
    );
    this.command.current = run;
    const onAbort = () => void run.stop();
    work.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const outcome = await run.done;
      if (outcome.status !== 'completed') {
        return {
          ok: false,
          status: outcome.status,
          message: `round ${work.round}: ${outcome.error_log ?? outcome.status}`,
        };
      }
      const n = outcome.result?.num_samples;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
        return {
          ok: false,
          status: 'failed',
          message: `round ${work.round}: the command must print {"result": {"num_samples": N}} (N a positive integer)`,
        };
      }
      const written = await stat(work.outPath).catch(() => undefined);
      if (!written?.isFile()) {
        return {
          ok: false,
          status: 'failed',
          message: `round ${work.round}: the command wrote no AI_FARM_MODEL_OUT`,
        };
      }
      // The result's other numbers (loss, accuracy...) are the round's metrics.
      const { num_samples: _n, ...rest } = outcome.result ?? {};
      const fromResult = Object.fromEntries(Object.entries(rest).filter(([, v]) => typeof v === 'number'));
      return { ok: true, numSamples: n, metrics: { ...metrics, ...(outcome.metrics ?? {}), ...fromResult } };
    } finally {
      work.signal.removeEventListener('abort', onAbort);
      this.command.current = undefined;
    }
  }

  pause(): void {
    this.command.pause();
  }

  resume(): void {
    this.command.resume();
  }

  stop(graceMs?: number): void {
    void this.command.current?.stop(graceMs);
  }

  async close(): Promise<void> {
    await this.command.current?.stop();
  }
}
