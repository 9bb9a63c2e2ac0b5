/**
 * A sampled training task's round opening (docs/training.md, "Clients sampled per round"):
 * the round's clients are sampled among the eligible connected ones of the whole farm, the
 * sample is written (task event `round_sampled`, the ranks handed over) before anyone is told,
 * then the clients no longer sampled get `stop` and the new ones their `task` frame. Clients
 * sampled again keep their rank and lease.
 */
import type { Kysely } from 'kysely';
import type { ServerMessage, TrainingData } from '../../api/protocol.js';
import type { Bus } from '../../bus/bus.js';
import { assignedLease, rememberFinished, type ClientRegistry, type Lease } from '../../clients/registry.js';
import { taskFrameData } from '../../compat/task-frame.js';
import type { Logger } from '../../observability/logger.js';
import type { FarmView } from '../../scheduling/across.js';
import { fits, type ClientCapacity, type TaskRequirements } from '../../scheduling/policy.js';
import { SPEED_HISTORY, type SampleCandidate } from '../../scheduling/sampling.js';
import type { Database } from '../../storage/schema.js';
import { findTask, insertTaskEvent, latestEventData } from '../../storage/task-repo.js';
import { roundTimes } from '../../storage/training-repo.js';
import { parseJson, toDbTime, type Clock } from '../../storage/values.js';
import type { WriteQueue } from '../../storage/write-queue.js';
import { handOverRanks, type RankPlacement } from '../../tasks/lifecycle.js';
import { roundSampledEvent, sampleRound, samplingOf, type SampledRank } from '../sampling-config.js';
import type { TrainingConfig } from '../training-config.js';
import { dbDate } from './run.js';
import type { Ranks } from './ranks.js';

export interface ResampleDeps {
  db: Kysely<Database>;
  writes: WriteQueue;
  registry: ClientRegistry;
  bus: Bus;
  clock: Clock;
  logger: Logger;
  ranks: Ranks;
  /** The other instances' clients (absent on a lone instance). */
  farm?: FarmView | undefined;
  maxTasksPerClient: number;
}

/** The round being sampled, as this step needs it. */
export interface SampledRound {
  taskId: number;
  number: number;
  config: TrainingConfig;
  worldSize: number;
  /** The `training` object of a rank's task message. */
  data(rank: number, attempt: number): TrainingData;
  /** A `fraction` round sampled fewer clients than the task has ranks: it closes on theirs. */
  resize(k: number): void;
}

/** A rank's holder: a lease here, or a client of another instance. */
interface Holder {
  clientId: string;
  rank: number;
  attempt: number;
  lease?: Lease;
}

/** How many clients round `n` of the task sampled, or null when its sample is not written yet. */
export async function sampledAlready(
  db: Kysely<Database>,
  taskId: number,
  n: number,
): Promise<number | null> {
  const last = (await latestEventData(db, taskId, 'round_sampled')) as {
    round?: number;
    sampled?: unknown[];
  } | null;
  return last?.round === n ? (last.sampled?.length ?? 0) : null;
}

/**
 * A sampled task's round loaded from the journal (a restart, or round 1 just placed): its
 * sample when written already, else (the server stopped between the round's close and its
 * sample) sampled now.
 */
export async function resumeSample(d: ResampleDeps, round: SampledRound): Promise<void> {
  if (!samplingOf(round.config)) return;
  const written = await sampledAlready(d.db, round.taskId, round.number);
  if (written === null) await openSampledRound(d, round);
  else if (round.config.fraction !== undefined && written > 0) round.resize(written);
}

/**
 * Samples the open round's clients, hands the ranks over and tells them: `stop` to the clients
 * leaving, a `task` to those joining, round_start to those kept. False when the task samples
 * nothing (the caller tells every rank).
 */
export async function openSampledRound(d: ResampleDeps, round: SampledRound): Promise<boolean> {
  const s = samplingOf(round.config);
  if (!s) return false;
  const { taskId, number: n } = round;
  const holders: Holder[] = [
    ...d.ranks
      .local(taskId)
      .map((l) => ({ clientId: l.clientId, rank: l.rank, attempt: l.attempt, lease: l })),
    ...(await d.ranks.remote(taskId)).map((r) => ({
      clientId: r.client_id,
      rank: r.rank,
      attempt: r.attempt,
    })),
  ];
  const task = await findTask(d.db, taskId);
  if (!task) return false;
  const requirements = (parseJson(task.requirements) ?? {}) as TaskRequirements;
  const holding = new Set(holders.map((h) => h.clientId));
  const remote = d.farm ? await d.farm.remoteClients() : [];
  const eligible = [...d.registry.capacities(d.maxTasksPerClient), ...remote].filter(
    (c: ClientCapacity) =>
      !c.cordoned && (c.freeSlots > 0 || holding.has(c.id)) && fits(requirements, c, task.type),
  );
  const candidates = await withHistory(d, taskId, n, eligible);
  const picks = sampleRound(s, round.config.seed, n, candidates, round.worldSize);
  const now = d.clock.now();
  if (!picks) {
    // Too few clients to sample from: the round runs on the clients it has.
    await d.writes.run((trx) =>
      insertTaskEvent(trx, {
        task_id: taskId,
        at: toDbTime(now, true),
        kind: 'round_sampled',
        message: `round ${n}: ${eligible.length} eligible client(s), fewer than min_available (${s.min_available}); the round keeps its clients`,
        data: {
          round: n,
          method: s.sampling,
          eligible: eligible.length,
          sampled: holders.map((h) => ({
            client_id: h.clientId,
            rank: h.rank,
            reason: 'kept: too few eligible',
          })),
        },
      }),
    );
    return tellKept(d, round, new Set(holders.map((h) => h.rank)));
  }
  const k = picks.length;
  const plan = planHandOver(holders, picks);
  const remoteById = new Map(remote.map((c) => [c.id, c]));
  const joining: RankPlacement[] = plan.joining.map((p) => {
    const r = remoteById.get(p.clientId);
    return { ...p, ...(r ? { via: { instanceId: r.instanceId, maxTasks: r.maxTasks } } : {}) };
  });
  const { leaving, keep, sampled } = plan;
  const why = `not sampled for round ${n}`;
  const claimed = await d.writes.run(async (trx) => {
    const out = await handOverRanks(trx, taskId, { leaving, joining, why }, now);
    const event = roundSampledEvent(taskId, toDbTime(now, true), n, s.sampling, eligible.length, sampled);
    if (out) await insertTaskEvent(trx, event);
    return out;
  });
  if (!claimed) {
    d.logger.warn(
      { taskId, round: n },
      'sampled clients could not take their ranks; the round keeps its clients',
    );
    return tellKept(d, round, new Set(holders.map((h) => h.rank)));
  }
  if (round.config.fraction !== undefined) round.resize(k);
  await tellLeaving(d, taskId, leaving, why);
  const frame = (rank: number, attempt: number): ServerMessage => ({
    type: 'task',
    data: {
      ...taskFrameData({
        id: taskId,
        type: task.type,
        name: task.name,
        config: round.config,
        requirements: requirements as Record<string, unknown>,
        attempt,
        rank,
        worldSize: round.worldSize,
      }),
      training: round.data(rank, attempt),
    },
  });
  for (const [i, p] of joining.entries()) {
    const attempt = claimed.attempts[i] as number;
    const client = d.registry.get(p.clientId);
    if (!p.via && client) {
      client.leases.set(
        taskId,
        assignedLease({
          taskId,
          rank: p.rank,
          attempt,
          assignmentId: claimed.ids[i] as number,
          clientId: p.clientId,
          worldSize: round.worldSize,
        }),
      );
      client.send?.(frame(p.rank, attempt));
    } else {
      await d.bus.publish('cluster.push', {
        client_id: p.clientId,
        task_id: taskId,
        attempt,
        message: frame(p.rank, attempt),
      });
    }
  }
  if (leaving.length > 0) await d.bus.publish('work.available', { task_id: 0 });
  return tellKept(d, round, new Set(keep.map((h) => h.rank)));
}

/** The clients keeping their rank hear of the round as usual (round_start). */
async function tellKept(d: ResampleDeps, round: SampledRound, ranks: ReadonlySet<number>): Promise<true> {
  await d.ranks.tellSome(round.taskId, ranks, (rank, attempt) => ({
    type: 'round_start',
    task_id: round.taskId,
    attempt,
    rank,
    ...round.data(rank, attempt),
  }));
  return true;
}

/**
 * Who keeps, gives up and takes which rank when a round's `picks` replace the `holders`: a
 * holder sampled again keeps its rank (when it is below the number sampled); the others leave;
 * each new client takes the lowest free rank. Pure.
 */
export function planHandOver<H extends { clientId: string; rank: number }>(
  holders: readonly H[],
  picks: readonly { clientId: string; reason: string }[],
): { keep: H[]; leaving: H[]; joining: { clientId: string; rank: number }[]; sampled: SampledRank[] } {
  const k = picks.length;
  const picked = new Set(picks.map((p) => p.clientId));
  const keep = holders.filter((h) => picked.has(h.clientId) && h.rank < k);
  const kept = new Set(keep.map((h) => h.clientId));
  const free = Array.from({ length: k }, (_, r) => r).filter((r) => !keep.some((h) => h.rank === r));
  const joining = picks
    .filter((p) => !kept.has(p.clientId))
    .map((p, i) => ({ clientId: p.clientId, rank: free[i] as number }));
  const rankOf = new Map([...keep, ...joining].map((h) => [h.clientId, h.rank]));
  return {
    keep,
    leaving: holders.filter((h) => !kept.has(h.clientId)),
    joining,
    sampled: picks.map((p) => ({
      client_id: p.clientId,
      rank: rankOf.get(p.clientId) as number,
      reason: p.reason,
    })),
  };
}

/** The clients not sampled give their rank up: `stop`, here or through the instance holding them. */
async function tellLeaving(d: ResampleDeps, taskId: number, leaving: readonly Holder[], why: string) {
  const stop: ServerMessage = { type: 'stop', task_id: taskId, reason: why };
  for (const h of leaving) {
    if (h.lease) {
      const client = d.registry.get(h.clientId);
      if (client?.leases.get(taskId) === h.lease) client.leases.delete(taskId);
      if (client) rememberFinished(client, taskId);
      client?.send?.(stop);
    } else {
      await d.bus.publish('cluster.push', {
        client_id: h.clientId,
        task_id: taskId,
        attempt: h.attempt,
        message: stop,
      });
    }
  }
}

/** Each eligible client with its seconds from round open to accepted update in recent rounds. */
async function withHistory(
  d: ResampleDeps,
  taskId: number,
  n: number,
  eligible: readonly ClientCapacity[],
): Promise<SampleCandidate[]> {
  // Enough rounds back for every client's last few (clients skip rounds when not sampled).
  const rows = await roundTimes(d.db, taskId, Math.max(1, n - 4 * SPEED_HISTORY));
  const seconds = new Map<string, number[]>();
  for (const r of rows) {
    const s = (dbDate(r.accepted_at).getTime() - dbDate(r.opened_at).getTime()) / 1000;
    seconds.set(r.client_id, [...(seconds.get(r.client_id) ?? []), Math.max(0, s)]);
  }
  return eligible.map((c) => ({ id: c.id, seconds: seconds.get(c.id) ?? [] }));
}
