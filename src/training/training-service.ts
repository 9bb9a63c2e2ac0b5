/**
 * Reading training state for users and workers: the round journal as views, the model files,
 * and who may see them (users: their own tasks, admins: all, workers: tasks their clients hold).
 */
import type { RoundUpdateView } from '../api/tasks.js';
import type { Principal } from '../auth/principal.js';
import type { ClientRegistry } from '../clients/registry.js';
import { AppError, notFound } from '../errors.js';
import { everAssignedToToken } from '../storage/assignment-repo.js';
import type { Executor } from '../storage/executor.js';
import { findTask, type TaskRow } from '../storage/task-repo.js';
import {
  countTaskEvents,
  findRound,
  listRounds,
  listUpdates,
  overSelects,
  roundMetrics,
  type RoundRow,
} from '../storage/training-repo.js';
import { STALE_EVENT } from './coordinator/version-check.js';
import { fromDbTime, parseJson } from '../storage/values.js';
import type { TaskService } from '../tasks/task-service.js';
import type { StoredModel } from './model-store/serve-file.js';
import { presentUpdate, trainedByRound } from './round-clients.js';
import type { CurrentRoundView, RoundView } from './training-api.js';

/** A round as the API shows it, with the clients whose updates it accepted. */
export function presentRound(r: RoundRow, trained: RoundUpdateView[], overSelect = false): RoundView {
  return {
    round: Number(r.round),
    state: r.state,
    opened_at: fromDbTime(r.opened_at) as string,
    deadline_at: fromDbTime(r.deadline_at) as string,
    closed_at: fromDbTime(r.closed_at),
    num_updates: Number(r.num_updates),
    global_digest: r.global_digest,
    metrics: roundMetrics(r, overSelect),
    trained,
  };
}

export class TrainingService {
  constructor(private readonly d: { db: Executor; tasks: TaskService; registry: ClientRegistry }) {}

  /** The task if `principal` may read its training state; 404 otherwise. */
  async visible(principal: Principal, taskId: number): Promise<TaskRow> {
    if (principal.role !== 'worker') return this.d.tasks.visible(principal, taskId);
    const { db } = this.d;
    const holds = [...this.d.registry.all()].some((c) => c.tokenId === principal.id && c.leases.has(taskId));
    const held = holds || (await everAssignedToToken(db, taskId, principal.id));
    const row = held ? await findTask(db, taskId) : undefined;
    if (!row) throw notFound('task', taskId);
    return row;
  }

  async rounds(principal: Principal, taskId: number): Promise<RoundView[]> {
    const task = await this.visible(principal, taskId);
    const rows = await listRounds(this.d.db, taskId);
    const trained = await trainedByRound(this.d.db, taskId);
    const overSelect = overSelects(task.config);
    const views = rows.map((r) => presentRound(r, trained.get(Number(r.round)) ?? [], overSelect));
    // An open round's count is only written when it closes: count its journal instead.
    for (const v of views) if (v.state === 'open') v.num_updates = v.trained.length;
    return views;
  }

  async current(principal: Principal, taskId: number): Promise<CurrentRoundView> {
    const task = await this.visible(principal, taskId);
    const rows = await listRounds(this.d.db, taskId);
    const open = rows.find((r) => r.state === 'open') ?? rows.at(-1);
    if (!open) throw new AppError('no_round', `task ${taskId} has no round yet`, 404);
    const updates = await listUpdates(this.d.db, taskId, Number(open.round));
    const config =
      parseJson<{ rounds?: number; quorum?: number; mode?: 'sync' | 'async' }>(task.config) ?? {};
    return {
      ...presentRound(open, updates.map(presentUpdate), overSelects(task.config)),
      num_updates: open.state === 'open' ? updates.length : Number(open.num_updates),
      rounds: Number(config.rounds ?? 0),
      accepted_ranks: updates.map((u) => Number(u.rank)).sort((a, b) => a - b),
      quorum: Number(config.quorum ?? task.world_size),
      world_size: Number(task.world_size),
      mode: config.mode ?? 'sync',
      refused_stale: await countTaskEvents(this.d.db, taskId, STALE_EVENT),
    };
  }

  /** The global model round `round` starts from. */
  async roundModel(principal: Principal, taskId: number, round: number): Promise<StoredModel> {
    await this.visible(principal, taskId);
    const r = await findRound(this.d.db, taskId, round);
    if (!r?.global_path || !r.global_digest) {
      throw notFound('model', `of round ${round} of task ${taskId}`);
    }
    return {
      path: r.global_path,
      digest: r.global_digest,
      name: `task-${taskId}-round-${round}.safetensors`,
    };
  }

  /** The final model of a completed task. */
  async finalModel(principal: Principal, taskId: number): Promise<StoredModel> {
    const task = await this.visible(principal, taskId);
    const result = parseJson<{ model_path?: string; model_digest?: string }>(task.result);
    if (task.status !== 'completed' || !result?.model_path || !result.model_digest) {
      throw notFound('model', `of task ${taskId} (not finished)`);
    }
    return { path: result.model_path, digest: result.model_digest, name: `task-${taskId}.safetensors` };
  }
}
