import { Type, type Static } from '@sinclair/typebox';
import { NullableTimestamp, ListQuery, StatusBody, Timestamp } from './common.js';

/** Every status a task can have; tasks/task-state.ts says which changes are allowed. */
export const TASK_STATUSES = [
  'pending',
  'running',
  'completed',
  'failed',
  'error',
  'paused',
  'cancelled',
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export const TaskStatusSchema = Type.Union(
  TASK_STATUSES.map((s) => Type.Literal(s)),
  { description: 'pending, running, paused, completed, failed, error or cancelled.' },
);

/**
 * What a task needs of a client. Every field is optional; unknown fields are refused. The
 * original AI Farm's keys (min_ram, min_gpu_memory: same units) are accepted as aliases.
 */
export const Requirements = Type.Object(
  {
    min_cpu_cores: Type.Optional(Type.Integer({ minimum: 1, description: 'Logical CPU cores.' })),
    min_ram_gb: Type.Optional(Type.Number({ minimum: 0, description: 'Total RAM in GiB.' })),
    gpu_count: Type.Optional(Type.Integer({ minimum: 0, description: 'GPUs needed (0: none).' })),
    min_gpu_memory_gb: Type.Optional(Type.Number({ minimum: 0, description: 'Memory of each GPU, GiB.' })),
    min_ram: Type.Optional(
      Type.Number({
        minimum: 0,
        description: "The original AI Farm's name for min_ram_gb (GiB); stored as it.",
      }),
    ),
    min_gpu_memory: Type.Optional(
      Type.Number({
        minimum: 0,
        description: "The original AI Farm's name for min_gpu_memory_gb (GiB); stored as it.",
      }),
    ),
  },
  { additionalProperties: false },
);
export type Requirements = Static<typeof Requirements>;

export const CreateTaskBody = Type.Object(
  {
    type: Type.String({
      minLength: 1,
      maxLength: 255,
      description: 'Task type; the worker picks its executor by it (command, train_mnist, ...).',
    }),
    requirements: Requirements,
    config: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'Free-form task configuration.' }),
    ),
    priority: Type.Optional(
      Type.Integer({ minimum: -1000000, maximum: 1000000, default: 0, description: 'Higher runs first.' }),
    ),
    name: Type.Optional(Type.String({ maxLength: 255 })),
    max_attempts: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100,
        default: 3,
        description: 'Attempts before the task fails (per rank for multi-rank tasks).',
      }),
    ),
    world_size: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        default: 1,
        description: 'Ranks run at once on distinct clients (gang scheduled); each gets AI_FARM_RANK.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTaskBody = Static<typeof CreateTaskBody>;

/** POST /api/tasks/batch: many tasks created in one transaction (all or none). */
export const CreateTaskBatchBody = Type.Object(
  {
    tasks: Type.Array(CreateTaskBody, {
      minItems: 1,
      maxItems: 1000,
      description: 'The tasks, each as the body of POST /api/tasks; 1 to 1,000.',
    }),
  },
  { additionalProperties: false },
);
export type CreateTaskBatchBody = Static<typeof CreateTaskBatchBody>;

export const CreatedTaskBatch = Type.Object({
  ids: Type.Array(Type.Integer(), { description: 'Ids of the created tasks, in the order given.' }),
});
export type CreatedTaskBatch = Static<typeof CreatedTaskBatch>;

export const Task = Type.Object(
  {
    id: Type.Integer(),
    type: Type.String(),
    name: Type.Union([Type.String(), Type.Null()]),
    requirements: Type.Record(Type.String(), Type.Unknown()),
    status: TaskStatusSchema,
    client_id: Type.Union([Type.String(), Type.Null()], {
      description: 'Client of the latest assignment (rank 0).',
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
    result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    error_log: Type.Union([Type.String(), Type.Null()]),
    priority: Type.Integer(),
    config: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    checkpoint_path: Type.Union([Type.String(), Type.Null()]),
    created_by: Type.Union([Type.String(), Type.Null()]),
    progress: Type.Number({ description: 'Percent done, 0-100.' }),
    metrics: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], {
      description: 'Latest metrics reported.',
    }),
    attempts: Type.Integer(),
    max_attempts: Type.Integer(),
    world_size: Type.Integer(),
    unschedulable_reason: Type.Union([Type.String(), Type.Null()], {
      description: 'Why no known client can run this task, when that is so.',
    }),
    started_at: NullableTimestamp,
    finished_at: NullableTimestamp,
  },
  { description: 'A task.' },
);
export type Task = Static<typeof Task>;

export const ListTasksQuery = ListQuery({
  status: Type.Optional(TaskStatusSchema),
  type: Type.Optional(Type.String({ maxLength: 255 })),
  client_id: Type.Optional(Type.String({ maxLength: 255 })),
});
export type ListTasksQuery = Static<typeof ListTasksQuery>;

export const ChangeTaskStatusBody = StatusBody(TaskStatusSchema);

export const TaskEvent = Type.Object({
  id: Type.Integer(),
  at: Timestamp,
  kind: Type.String(),
  message: Type.String(),
  data: Type.Unknown(),
});
export type TaskEvent = Static<typeof TaskEvent>;

export const TaskEventsQuery = Type.Object(
  {
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1000, default: 200, description: 'Newest events to return.' }),
    ),
    before: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'Only events with an id below this one: the next page is `before` = the last id of this one.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type TaskEventsQuery = Static<typeof TaskEventsQuery>;

export const AssignmentView = Type.Object({
  id: Type.Integer(),
  task_id: Type.Integer(),
  client_id: Type.String(),
  rank: Type.Integer(),
  attempt: Type.Integer(),
  status: Type.String({ description: 'assigned, training, paused, completed, failed, lost or cancelled.' }),
  progress: Type.Number(),
  assigned_at: Timestamp,
  updated_at: Timestamp,
  finished_at: NullableTimestamp,
  checkpoint_path: Type.Union([Type.String(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
});
export type AssignmentView = Static<typeof AssignmentView>;

/** A client whose update a round accepted: the assignment (rank, client, attempt) it came under. */
export const RoundUpdateView = Type.Composite([
  Type.Pick(AssignmentView, ['rank', 'client_id', 'attempt']),
  Type.Object({ accepted_at: Timestamp }),
]);
export type RoundUpdateView = Static<typeof RoundUpdateView>;

/** A round's `trained` field (GET /api/tasks/{id}/rounds and /metrics). */
export const RoundTrained = Type.Array(RoundUpdateView, {
  description:
    "The clients whose updates this round accepted into its aggregate (async: the version's buffer), in acceptance order.",
});

export const TaskMetricsView = Type.Object({
  task_id: Type.Integer(),
  progress: Type.Number(),
  latest: Type.Unknown({ description: 'Latest metrics reported.' }),
  items: Type.Array(
    Type.Object({
      at: Timestamp,
      rank: Type.Integer(),
      attempt: Type.Integer(),
      round: Type.Union([Type.Integer(), Type.Null()]),
      progress: Type.Number(),
      metrics: Type.Record(Type.String(), Type.Unknown()),
    }),
    { description: 'Sampled history, oldest first (one sample per rank every 2 s at most; 2,000 kept).' },
  ),
  rounds: Type.Optional(
    Type.Array(
      Type.Object({
        round: Type.Integer(),
        state: Type.String({ description: 'open or closed.' }),
        closed_at: NullableTimestamp,
        num_updates: Type.Integer(),
        metrics: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
        trained: RoundTrained,
      }),
      {
        description:
          "Training tasks: per round, the ranks' metrics weighted by samples (plus heldout_* for train_mnist).",
      },
    ),
  ),
});
export type TaskMetricsView = Static<typeof TaskMetricsView>;

export const TaskLogLine = Type.Object({
  at: Timestamp,
  rank: Type.Integer(),
  attempt: Type.Integer(),
  line: Type.String(),
});
export type TaskLogLine = Static<typeof TaskLogLine>;

export const TaskLogsQuery = Type.Object(
  {
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 2000, default: 500, description: 'Newest lines to return.' }),
    ),
  },
  { additionalProperties: false },
);
