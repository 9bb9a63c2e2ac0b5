import type { BatchWrite, GroupCommit, WriteQueue } from '../storage/write-queue.js';
import type {
  AssignmentView,
  CreateTaskBody,
  ListTasksQuery,
  Task,
  TaskEvent,
  TaskEventsQuery,
  TaskMetricsView,
  TaskLogLine,
} from '../api/tasks.js';
import { isAdmin, ownerOf, type Principal } from '../auth/principal.js';
import { announceStatus, type Bus, type TaskIntent } from '../bus/bus.js';
import { normalizeRequirements } from '../compat/requirements.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { inTransaction, type Executor } from '../storage/executor.js';
import type { TaskStatus } from '../storage/schema.js';
import * as repo from '../storage/task-repo.js';
import { listLogLines } from '../storage/log-repo.js';
import { countLiveAssignments, listAssignments, listMetricSamples } from '../storage/assignment-repo.js';
import { listRounds, overSelects, roundMetrics } from '../storage/training-repo.js';
import { trainedByRound } from '../training/round-clients.js';
import { insertTaskCode } from '../storage/code-repo.js';
import { fromDbTime, parseJson, toDbTime, type Clock } from '../storage/values.js';
import {
  isTrainingConfig,
  prepareTrainingConfig,
  type TrainingDefaults,
} from '../training/training-config.js';
import { changeByUser } from './lifecycle.js';
import { ranksToReplace } from './lifecycle-decisions.js';
import { LIVE_STATUSES, USER_TRANSITIONS, resolveUserTarget, userMayChange } from './task-state.js';

export interface TaskPage {
  items: Task[];
  total: number;
  limit: number;
  offset: number;
}

/** Control message clients receive for a status change made by a user. */
/** The intent a user's status change announces (task.control). */
const INTENT_FOR: Partial<Record<TaskStatus, TaskIntent>> = {
  paused: 'pause',
  running: 'resume',
  cancelled: 'stop',
  pending: 'requeue',
};

/** What the task use cases need of this process's dispatcher (src/scheduling/dispatcher.ts). */
export interface TaskScheduler {
  /** Tasks this process has just created (pending, never attempted): queued without a read. */
  offer(rows: readonly repo.TaskRow[]): void;
  /** Ranks of a running task that need a new client. */
  requeueRanks(taskId: number, ranks: readonly number[]): Promise<void>;
}

/** Most tasks one `createMany` (POST /api/tasks/batch) takes. */
export const MAX_BATCH = 1000;

/** Resolves the code a task names (config.model, config.code): code/code-service.ts. */
export interface TaskCodeResolver {
  resolveTaskConfig(config: Record<string, unknown> | undefined): Promise<{
    config: Record<string, unknown>;
    link: { digest: string; model: string | null };
  } | null>;
}

interface NewTask {
  row: repo.NewTaskRow;
  /** The code the task runs, recorded in task_code with it. */
  code: { digest: string; model: string | null } | null;
  /** Time of the `created` event (with milliseconds). */
  at: string;
  by: string;
}

/** Inserts tasks and their `created` events, every create of a group commit in two multi-row INSERTs. */
const createTasks: BatchWrite<NewTask, number> = {
  name: 'create tasks',
  async run(trx, items, commit) {
    const ids = await repo.insertTasks(
      trx,
      items.map((i) => i.row),
    );
    commit.events.push(
      ...items.map((i, k) => ({
        task_id: ids[k] as number,
        at: i.at,
        kind: 'created',
        message: `created by ${i.by}`,
      })),
    );
    const code = items.flatMap((i, k) => (i.code ? [{ task_id: ids[k] as number, ...i.code }] : []));
    await insertTaskCode(trx, code);
    return ids;
  },
};

/** The tasks and their events in a transaction of their own. */
async function createAlone(trx: Executor, items: NewTask[]): Promise<number[]> {
  const commit: GroupCommit = { events: [] };
  const ids = await createTasks.run(trx, items, commit);
  await repo.insertTaskEvents(trx, commit.events);
  return ids;
}

/** Task use cases behind the HTTP API and the CLI. */
export class TaskService {
  constructor(
    private readonly db: Executor,
    private readonly bus: Bus,
    private readonly clock: Clock,
    /** DEFAULT_EPOCHS and DEFAULT_BATCH_SIZE, filled into training configs. */
    private readonly training: TrainingDefaults = { defaultEpochs: 10, defaultBatchSize: 32 },
    /** Group commit for creates (many creates, one transaction); a plain transaction without it. */
    private readonly writes?: WriteQueue,
    /** This process's dispatcher: handed the tasks just created, and the ranks a resumed task lost. */
    private readonly scheduler?: TaskScheduler,
    /** Resolves config.model and config.code; without it, tasks naming code are refused. */
    private readonly code?: TaskCodeResolver,
  ) {}

  async create(principal: Principal, input: CreateTaskBody): Promise<Task> {
    const item = this.newTask(principal, input, await this.resolveCode(input));
    const [id] = this.writes
      ? [await this.writes.submit(createTasks, item)]
      : await inTransaction(this.db, (trx) => createAlone(trx, [item]));
    const row = repo.newTaskRow(id as number, item.row);
    this.scheduler?.offer([row]);
    await this.announce(row.id);
    return this.present(row);
  }

  /**
   * Creates up to MAX_BATCH tasks in one transaction (one multi-row INSERT for the tasks and
   * one for their events): all of them or, on any error, none. Returns their ids in order.
   */
  async createMany(principal: Principal, inputs: readonly CreateTaskBody[]): Promise<number[]> {
    if (inputs.length > MAX_BATCH) {
      throw badRequest('batch_too_large', `at most ${MAX_BATCH} tasks per batch, got ${inputs.length}`);
    }
    const items: NewTask[] = [];
    for (const [i, input] of inputs.entries()) {
      try {
        items.push(this.newTask(principal, input, await this.resolveCode(input)));
      } catch (err) {
        if (err instanceof AppError)
          throw new AppError(err.code, `tasks[${i}]: ${err.message}`, err.status, err.details);
        throw err;
      }
    }
    if (items.length === 0) return [];
    const op = (trx: Executor) => createAlone(trx, items);
    // One operation of its own, so the batch is one transaction whatever the group commit's size.
    const ids = this.writes ? await this.writes.run(op) : await inTransaction(this.db, op);
    this.scheduler?.offer(ids.map((id, i) => repo.newTaskRow(id, (items[i] as NewTask).row)));
    for (const id of ids) await this.announce(id);
    return ids;
  }

  /** The task's code made concrete (config.code filled in), or null when it names none. */
  private async resolveCode(
    input: CreateTaskBody,
  ): Promise<Awaited<ReturnType<TaskCodeResolver['resolveTaskConfig']>>> {
    if (input.config?.model === undefined && input.config?.code === undefined) return null;
    if (!this.code) throw badRequest('code_unavailable', 'this server does not ship code with tasks');
    return this.code.resolveTaskConfig(input.config);
  }

  /** The row and `created` event of a task to create, its training config prepared. */
  private newTask(
    principal: Principal,
    input: CreateTaskBody,
    code: Awaited<ReturnType<TaskCodeResolver['resolveTaskConfig']>> = null,
  ): NewTask {
    const requirements = normalizeRequirements(input.requirements);
    if (!requirements.ok) throw requirements.error;
    let body: CreateTaskBody = {
      ...input,
      requirements: requirements.requirements,
      ...(code ? { config: code.config } : {}),
    };
    if (isTrainingConfig(body.config)) {
      const prepared = prepareTrainingConfig(body.config ?? {}, body.world_size, this.training);
      if (!prepared.ok) throw prepared.error;
      body = { ...body, config: prepared.config, world_size: prepared.worldSize };
    }
    const now = this.clock.now();
    return {
      row: {
        type: body.type,
        name: body.name ?? null,
        requirements: JSON.stringify(body.requirements),
        config: body.config === undefined ? null : JSON.stringify(body.config),
        priority: body.priority ?? 0,
        max_attempts: body.max_attempts ?? 3,
        world_size: body.world_size ?? 1,
        created_by: principal.name,
        owner: ownerOf(principal),
        now: toDbTime(now),
      },
      at: toDbTime(now, true),
      by: principal.name,
      code: code?.link ?? null,
    };
  }

  /** Announces a new pending task: the dispatchers (every instance) read it; the panel shows it. */
  private async announce(id: number): Promise<void> {
    await announceStatus(this.bus, id, 'pending');
  }

  async get(principal: Principal, id: number): Promise<Task> {
    return this.present(await this.visible(principal, id));
  }

  async list(principal: Principal, q: ListTasksQuery): Promise<TaskPage> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const { rows, total } = await repo.listTasks(this.db, {
      status: q.status,
      type: q.type,
      client_id: q.client_id,
      owner: isAdmin(principal) ? undefined : ownerOf(principal),
      limit,
      offset,
    });
    return { items: rows.map((r) => this.present(r)), total, limit, offset };
  }

  /** A user's status change: checked against the state machine, then announced to clients. */
  async changeStatus(principal: Principal, id: number, to: TaskStatus): Promise<Task> {
    const row = await this.visible(principal, id);
    const from = row.status;
    if (!userMayChange(from, to)) {
      throw conflict('illegal_transition', `task ${id} is ${from}; it cannot become ${to}`, {
        from,
        to,
        allowed: USER_TRANSITIONS[from],
      });
    }
    const live = await this.liveAssignmentCount(id);
    const target = resolveUserTarget(from, to, live > 0);
    const now = this.clock.now();
    const change = { taskId: id, from, to: target, requested: to, by: principal.name, now };
    const done = await inTransaction(this.db, (trx) => changeByUser(trx, change));
    if (!done) {
      const now = await this.mustFind(id);
      throw conflict('status_changed', `task ${id} changed to ${now.status} meanwhile; try again`, {
        from: now.status,
        allowed: USER_TRANSITIONS[now.status],
      });
    }
    // Only a task under way has clients to tell or a round to pause or end.
    const intent = live > 0 || from === 'running' || from === 'paused' ? INTENT_FOR[target] : undefined;
    if (intent) await this.bus.publish('task.control', { task_id: id, action: intent });
    // Ranks lost while it was paused kept their attempts for now: placed here, by the one
    // instance that resumed the task (every instance hears the intent).
    if (from === 'paused' && target === 'running' && Number(row.world_size) > 1) {
      const lost = ranksToReplace(await listAssignments(this.db, id));
      if (lost.length > 0) await this.scheduler?.requeueRanks(id, lost);
    }
    await announceStatus(this.bus, id, target);
    return this.present(await this.mustFind(id));
  }

  /** Deletes a task; clients still working on it are told to stop first. */
  async delete(principal: Principal, id: number): Promise<void> {
    const row = await this.visible(principal, id);
    if (LIVE_STATUSES.has(row.status) || (await this.liveAssignmentCount(id)) > 0) {
      await this.bus.publish('task.control', { task_id: id, action: 'stop' });
    }
    await repo.deleteTask(this.db, id);
    await this.bus.publish('task.control', { task_id: id, action: 'delete' });
    await announceStatus(this.bus, id, 'deleted');
  }

  /** A page of a task's events, newest first: `limit` of them, below the id `before` when given. */
  async events(principal: Principal, id: number, page: TaskEventsQuery = {}): Promise<TaskEvent[]> {
    await this.visible(principal, id);
    const rows = await repo.listTaskEvents(this.db, id, page.limit ?? 200, page.before);
    return rows.map((e) => ({
      id: Number(e.id),
      at: fromDbTime(e.at) as string,
      kind: e.kind,
      message: e.message,
      data: parseJson(e.data),
    }));
  }

  /** Metrics history (sampled, bounded) and the latest values. */
  async metrics(principal: Principal, id: number, limit = 1000): Promise<TaskMetricsView> {
    const row = await this.visible(principal, id);
    const samples = await listMetricSamples(this.db, id, limit);
    const rounds = await listRounds(this.db, id);
    const trained = rounds.length > 0 ? await trainedByRound(this.db, id) : undefined;
    return {
      ...(rounds.length > 0
        ? {
            rounds: rounds.map((r) => ({
              round: Number(r.round),
              state: r.state,
              closed_at: fromDbTime(r.closed_at),
              num_updates: Number(r.num_updates),
              metrics: roundMetrics(r, overSelects(row.config)),
              trained: trained?.get(Number(r.round)) ?? [],
            })),
          }
        : {}),
      task_id: id,
      progress: Number(row.progress),
      latest: parseJson(row.metrics),
      items: samples.map((s) => ({
        at: fromDbTime(s.at) as string,
        rank: Number(s.rank),
        attempt: Number(s.attempt),
        round: s.round === null ? null : Number(s.round),
        progress: Number(s.progress),
        metrics: (parseJson(s.metrics) ?? {}) as Record<string, unknown>,
      })),
    };
  }

  /** The newest output lines workers sent for the task (task_log), oldest first. */
  async logs(principal: Principal, id: number, limit = 500): Promise<TaskLogLine[]> {
    await this.visible(principal, id);
    return (await listLogLines(this.db, id, limit)).map((l) => ({
      at: fromDbTime(l.at) as string,
      rank: Number(l.rank),
      attempt: Number(l.attempt),
      line: l.line,
    }));
  }

  /** Every attempt at every rank, oldest first. */
  async assignments(principal: Principal, id: number): Promise<AssignmentView[]> {
    await this.visible(principal, id);
    return (await listAssignments(this.db, id)).map((a) => ({
      id: Number(a.id),
      task_id: Number(a.task_id),
      client_id: a.client_id,
      rank: Number(a.rank),
      attempt: Number(a.attempt),
      status: a.status,
      progress: Number(a.progress),
      assigned_at: fromDbTime(a.assigned_at) as string,
      updated_at: fromDbTime(a.updated_at) as string,
      finished_at: fromDbTime(a.finished_at),
      checkpoint_path: a.checkpoint_path,
      error: a.error,
    }));
  }

  /** The task if this principal may see it; 404 otherwise (not 403: ids are not secrets to confirm). */
  async visible(principal: Principal, id: number): Promise<repo.TaskRow> {
    const row = await repo.findTask(this.db, id);
    if (!row || (!isAdmin(principal) && row.owner !== ownerOf(principal))) throw notFound('task', id);
    return row;
  }

  private async mustFind(id: number): Promise<repo.TaskRow> {
    const row = await repo.findTask(this.db, id);
    if (!row) throw notFound('task', id);
    return row;
  }

  private liveAssignmentCount(taskId: number): Promise<number> {
    return countLiveAssignments(this.db, taskId);
  }

  present(r: repo.TaskRow): Task {
    return presentTask(r);
  }
}

/** A task row as the API shows it: JSON parsed, times in ISO 8601. */
export function presentTask(r: repo.TaskRow): Task {
  return {
    id: Number(r.id),
    type: r.type,
    name: r.name,
    requirements: (parseJson(r.requirements) ?? {}) as Record<string, unknown>,
    status: r.status,
    client_id: r.client_id,
    created_at: fromDbTime(r.created_at) as string,
    updated_at: fromDbTime(r.updated_at) as string,
    result: parseJson(r.result),
    error_log: r.error_log,
    priority: Number(r.priority ?? 0),
    config: parseJson(r.config),
    checkpoint_path: r.checkpoint_path,
    created_by: r.created_by,
    progress: Number(r.progress),
    metrics: parseJson(r.metrics),
    attempts: Number(r.attempts),
    max_attempts: Number(r.max_attempts),
    world_size: Number(r.world_size),
    unschedulable_reason: r.unschedulable_reason,
    started_at: fromDbTime(r.started_at),
    finished_at: fromDbTime(r.finished_at),
  };
}
