/**
 * The in-memory state of one running training task: its open round, the updates accepted so
 * far and the running FedAvg sum. All of it is a cache of the round journal (training_rounds,
 * round_updates) and is rebuilt from it after a restart.
 */
import type { TrainingData } from '../../api/protocol.js';
import type { FedAvgSession } from '../aggregation/runner.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { TrainingConfig } from '../training-config.js';

/** An update recorded in the journal for the open round. */
export interface AcceptedUpdate {
  rank: number;
  attempt: number;
  clientId: string;
  numSamples: number;
  path: string;
  digest: string;
  bytes: number;
  metrics: Record<string, unknown> | null;
}

export interface Run {
  taskId: number;
  type: string;
  config: TrainingConfig;
  worldSize: number;
  round: number;
  deadlineAt: Date;
  extensions: number;
  /** The global model this round starts from; null in round 1. */
  globalPath: string | null;
  globalDigest: string | null;
  /** Names, dtypes and shapes every update must have: the global model's, or round 1's first update's. */
  reference: SafetensorsHeader | null;
  /** FedAvg/FedProx running sum (null for robust strategies, or until round 1's first update). */
  session: FedAvgSession | null;
  /** False once an add failed: the close then aggregates the journal's files in one pass instead. */
  sessionSound: boolean;
  accepted: Map<number, AcceptedUpdate>;
  /** Adds still running in the session's thread. */
  adds: Promise<void>[];
  timer: NodeJS.Timeout | null;
  /** While the task is paused: the milliseconds its round had left. */
  pausedLeft?: number | undefined;
  closing: boolean;
  /** Dropped (finished, failed, cancelled): late events are ignored. */
  ended: boolean;
  /**
   * Several instances: another instance owns the task's rounds. This is a fresh read of the
   * journal for one upload or one `task` message; it holds no sum and no timer.
   */
  follower?: boolean;
}

/** True when the strategy sums updates as they arrive. */
export function incremental(run: Pick<Run, 'config'>): boolean {
  const s = run.config.aggregation.strategy;
  return s === 'fedavg' || s === 'fedprox';
}

/** The `training` object of a rank's task message (URLs relative to the HTTP API). */
export function trainingData(run: Run, rank: number, attempt: number): TrainingData {
  const base = `/api/tasks/${run.taskId}/rounds/${run.round}`;
  return {
    round: run.round,
    rounds: run.config.rounds,
    global_model_url: run.globalPath ? `${base}/model` : null,
    upload_url: `${base}/updates/${rank}?attempt=${attempt}`,
    deadline_at: run.deadlineAt.toISOString(),
    ...(run.accepted.has(rank) ? { accepted: true } : {}),
  };
}

/** Mean of each numeric metric over the updates, weighted by their sample counts. */
export function weightedMetrics(updates: readonly AcceptedUpdate[]): Record<string, number> {
  const sums = new Map<string, { s: number; w: number }>();
  for (const u of updates) {
    for (const [k, v] of Object.entries(u.metrics ?? {})) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      const acc = sums.get(k) ?? { s: 0, w: 0 };
      acc.s += v * u.numSamples;
      acc.w += u.numSamples;
      sums.set(k, acc);
    }
  }
  const out: Record<string, number> = {};
  for (const [k, { s, w }] of sums) if (w > 0) out[k] = s / w;
  return out;
}
