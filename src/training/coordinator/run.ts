/**
 * Updates accepted into a round, and what ranks are told of their round: plain values and pure
 * functions over them (the round itself is round.ts).
 */
import type { TrainingData } from '../../api/protocol.js';
import type { NewUpdate, UpdateRow } from '../../storage/training-repo.js';
import { fromDbTime, parseJson } from '../../storage/values.js';
import type { TrainingConfig } from '../training-config.js';

/** An update recorded in the journal for the open round. */
export interface AcceptedUpdate {
  /** The round (async: the version) the update started from: its upload URL's. */
  round: number;
  rank: number;
  attempt: number;
  clientId: string;
  numSamples: number;
  path: string;
  digest: string;
  bytes: number;
  metrics: Record<string, unknown> | null;
}

/** What a rank's task message says of its task's round (a Round has it). */
export interface RoundView {
  taskId: number;
  number: number;
  config: TrainingConfig;
  deadlineAt: Date;
  globalPath: string | null;
  /** By slotKey (the version an update started from, and its rank). */
  accepted: ReadonlyMap<string, AcceptedUpdate>;
}

/**
 * An update's place among a round's accepted ones: its rank and the round it started from (in
 * async mode a rank may fold a stale update and then a fresh one into the same version).
 */
export function slotKey(round: number, rank: number): string {
  return `${round}:${rank}`;
}

/** The ranks with an update in `accepted`. */
export function ranksOf(accepted: ReadonlyMap<string, AcceptedUpdate>): Set<number> {
  return new Set([...accepted.values()].map((u) => u.rank));
}

/** An update as the journal records it. */
/** The journal row of an update accepted into round `bufferRound` (async: its buffer) at `at`. */
export function journalRow(
  taskId: number,
  bufferRound: number,
  u: AcceptedUpdate,
  at: string,
): NewUpdate & { buffer_round: number } {
  return {
    task_id: taskId,
    round: u.round,
    buffer_round: bufferRound,
    rank: u.rank,
    attempt: u.attempt,
    client_id: u.clientId,
    num_samples: u.numSamples,
    path: u.path,
    digest: u.digest,
    bytes: u.bytes,
    metrics: u.metrics ? JSON.stringify(u.metrics) : null,
    accepted_at: at,
  };
}

export function updateOf(u: UpdateRow): AcceptedUpdate {
  return {
    round: Number(u.round),
    rank: Number(u.rank),
    attempt: Number(u.attempt),
    clientId: u.client_id,
    numSamples: Number(u.num_samples),
    path: u.path,
    digest: u.digest,
    bytes: Number(u.bytes),
    metrics: parseJson<Record<string, unknown>>(u.metrics),
  };
}

/** The `training` object of a rank's task message (URLs relative to the HTTP API). */
export function trainingData(run: RoundView, rank: number, attempt: number): TrainingData {
  const base = `/api/tasks/${run.taskId}/rounds/${run.number}`;
  return {
    round: run.number,
    rounds: run.config.rounds,
    global_model_url: run.globalPath ? `${base}/model` : null,
    upload_url: `${base}/updates/${rank}?attempt=${attempt}`,
    deadline_at: run.deadlineAt.toISOString(),
    ...(run.accepted.has(slotKey(run.number, rank)) ? { accepted: true } : {}),
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

/** A time the database returned (a deadline, an event's time). */
export function dbDate(v: unknown): Date {
  return new Date(fromDbTime(String(v)) as string);
}
