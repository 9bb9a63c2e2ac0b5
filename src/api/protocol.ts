import { Type, type Static, type TSchema } from '@sinclair/typebox';

/**
 * The worker protocol: JSON messages over WebSocket, one schema per message. The seed's
 * messages keep their exact names and fields; AI Farm adds registration, heartbeats,
 * acks and errors. Every message may carry `msg_id`; the `ack` or `error` that answers
 * it carries the same value in `reply_to`.
 *
 * docs/protocol.md is generated from these schemas (npm run docs:protocol).
 */
export const PROTOCOL_VERSION = 1;

const MsgId = Type.Optional(
  Type.Union([Type.String({ maxLength: 128 }), Type.Integer()], {
    description: 'Chosen by the sender; echoed as reply_to in the answer.',
  }),
);
const ClientId = Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_.:@-]+$' });
const TaskId = Type.Union([Type.Integer({ minimum: 1 }), Type.String({ pattern: '^[1-9][0-9]{0,9}$' })], {
  description: 'Task id; the original client sends it as a string.',
});
const Metrics = Type.Record(Type.String(), Type.Unknown(), {
  description: 'Free-form metrics (loss, accuracy, ...).',
});

/** The machine's hardware, as the original AI Farm client reports it (sizes in bytes, GPU memory in MB). */
export const SystemInfo = Type.Object(
  {
    id: Type.Optional(ClientId),
    client_id: Type.Optional(ClientId),
    hostname: Type.Optional(Type.String({ maxLength: 255 })),
    platform: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    cpu: Type.Object(
      {
        brand: Type.Optional(Type.String()),
        cores_physical: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
        cores_logical: Type.Integer({ minimum: 1 }),
        frequency: Type.Optional(Type.Unknown()),
        usage_percent: Type.Optional(Type.Unknown()),
      },
      { additionalProperties: true },
    ),
    ram: Type.Object(
      {
        total: Type.Number({ minimum: 0, description: 'Bytes.' }),
        available: Type.Optional(Type.Number()),
        used: Type.Optional(Type.Number()),
        percent: Type.Optional(Type.Number()),
      },
      { additionalProperties: true },
    ),
    gpu: Type.Optional(
      Type.Union([
        Type.Array(
          Type.Object(
            {
              id: Type.Optional(Type.Union([Type.Integer(), Type.String()])),
              name: Type.Optional(Type.String()),
              load: Type.Optional(Type.Number({ description: '0..1' })),
              memory: Type.Optional(
                Type.Object(
                  {
                    total: Type.Number({ description: 'MB' }),
                    used: Type.Optional(Type.Number()),
                    free: Type.Optional(Type.Number()),
                  },
                  { additionalProperties: true },
                ),
              ),
              temperature: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
            },
            { additionalProperties: true },
          ),
          { maxItems: 64 },
        ),
        Type.Null(),
      ]),
    ),
    session: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()])),
  },
  { additionalProperties: true },
);
export type SystemInfo = Static<typeof SystemInfo>;

/** Utilization a worker reports with each heartbeat (percent, 0-100). */
export const Utilization = Type.Object(
  {
    cpu_utilization: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
    ram_utilization: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
    gpu_utilization: Type.Optional(
      Type.Array(
        Type.Object({
          id: Type.Union([Type.Integer(), Type.String()]),
          utilization: Type.Number({ minimum: 0, maximum: 100 }),
          memory_used: Type.Optional(Type.Number({ minimum: 0, description: 'MB' })),
        }),
        { maxItems: 64 },
      ),
    ),
  },
  { additionalProperties: false },
);
export type Utilization = Static<typeof Utilization>;

// ---- client -> server ------------------------------------------------------------

export const RegisterMessage = Type.Composite([
  Type.Object({
    type: Type.Literal('register'),
    msg_id: MsgId,
    protocol_version: Type.Optional(Type.Integer({ minimum: 1 })),
    max_tasks: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1000, description: 'Tasks it runs at once.' }),
    ),
    task_types: Type.Optional(
      Type.Array(Type.String({ maxLength: 255 }), { maxItems: 100, description: 'Task types it can run.' }),
    ),
  }),
  SystemInfo,
]);
export type RegisterMessage = Static<typeof RegisterMessage>;

export const TaskRequestMessage = Type.Object({
  type: Type.Literal('task_request'),
  msg_id: MsgId,
  client_id: Type.Optional(ClientId),
});
export type TaskRequestMessage = Static<typeof TaskRequestMessage>;

export const TaskProgressMessage = Type.Object({
  type: Type.Literal('task_progress'),
  msg_id: MsgId,
  task_id: TaskId,
  progress: Type.Number({ minimum: 0, maximum: 100, description: 'Percent done.' }),
  metrics: Type.Optional(Metrics),
  client_id: Type.Optional(ClientId),
  attempt: Type.Optional(
    Type.Integer({ minimum: 1, description: 'The lease; omitted by the original client.' }),
  ),
  rank: Type.Optional(Type.Integer({ minimum: 0 })),
  round: Type.Optional(Type.Integer({ minimum: 0 })),
  timestamp: Type.Optional(Type.Union([Type.Number(), Type.String()])),
});
export type TaskProgressMessage = Static<typeof TaskProgressMessage>;

export const TaskResultMessage = Type.Object({
  type: Type.Literal('task_result'),
  msg_id: MsgId,
  task_id: TaskId,
  status: Type.Union([Type.Literal('completed'), Type.Literal('failed'), Type.Literal('error')]),
  metrics: Type.Optional(Metrics),
  result: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  checkpoint_path: Type.Optional(Type.Union([Type.String({ maxLength: 255 }), Type.Null()])),
  error_log: Type.Optional(Type.Union([Type.String({ maxLength: 65536 }), Type.Null()])),
  error: Type.Optional(
    Type.Union([Type.String({ maxLength: 65536 }), Type.Null()], {
      description: "The original client's failure message, kept as error_log when that is absent.",
    }),
  ),
  client_id: Type.Optional(ClientId),
  attempt: Type.Optional(Type.Integer({ minimum: 1 })),
  rank: Type.Optional(Type.Integer({ minimum: 0 })),
  timestamp: Type.Optional(Type.Union([Type.Number(), Type.String()])),
});
export type TaskResultMessage = Static<typeof TaskResultMessage>;

export const HeartbeatMessage = Type.Object({
  type: Type.Literal('heartbeat'),
  msg_id: MsgId,
  client_id: Type.Optional(ClientId),
  timestamp: Type.Optional(Type.Union([Type.Number(), Type.String()])),
  utilization: Type.Optional(Utilization),
  system_info: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});
export type HeartbeatMessage = Static<typeof HeartbeatMessage>;

/** Output lines of a task (a command's stdout/stderr), batched; kept on the server, bounded. */
export const TaskLogMessage = Type.Object({
  type: Type.Literal('task_log'),
  msg_id: MsgId,
  task_id: TaskId,
  attempt: Type.Optional(Type.Integer({ minimum: 1 })),
  rank: Type.Optional(Type.Integer({ minimum: 0 })),
  lines: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 200 }),
});
export type TaskLogMessage = Static<typeof TaskLogMessage>;

/**
 * The original AI Farm client, before it trains a task with `config.distributed`, asks where
 * its rank stands and reads the very next frame as the answer (an `init_distributed`).
 */
export const InitDistributedMessage = Type.Object({
  type: Type.Literal('init_distributed'),
  msg_id: MsgId,
  task_id: TaskId,
  client_id: Type.Optional(ClientId),
  rank: Type.Optional(Type.Integer({ minimum: 0, description: 'The rank it believes it has.' })),
});
export type InitDistributedMessage = Static<typeof InitDistributedMessage>;

/** The original client's notes on a distributed task (ready to train, shard done): taken, not answered. */
export const DistributedNoteMessage = Type.Object({
  type: Type.Union([Type.Literal('distributed_ready'), Type.Literal('distributed_cleanup')]),
  msg_id: MsgId,
  task_id: TaskId,
  client_id: Type.Optional(ClientId),
  rank: Type.Optional(Type.Integer({ minimum: 0 })),
});
export type DistributedNoteMessage = Static<typeof DistributedNoteMessage>;

/** Every message a client may send, by type. */
export const CLIENT_MESSAGES = {
  register: RegisterMessage,
  task_request: TaskRequestMessage,
  task_progress: TaskProgressMessage,
  task_result: TaskResultMessage,
  heartbeat: HeartbeatMessage,
  task_log: TaskLogMessage,
  init_distributed: InitDistributedMessage,
  distributed_ready: DistributedNoteMessage,
  distributed_cleanup: DistributedNoteMessage,
} as const satisfies Record<string, TSchema>;
export type ClientMessageType = keyof typeof CLIENT_MESSAGES;
export type ClientMessage =
  | RegisterMessage
  | TaskRequestMessage
  | TaskProgressMessage
  | TaskResultMessage
  | HeartbeatMessage
  | TaskLogMessage
  | InitDistributedMessage
  | DistributedNoteMessage;

// ---- server -> client ------------------------------------------------------------

/** Where a rank of a training task stands (docs/training.md); URLs are relative to the HTTP API. */
export const TrainingData = Type.Object({
  round: Type.Integer({ minimum: 1, description: 'The open round.' }),
  rounds: Type.Integer({ minimum: 1 }),
  global_model_url: Type.Union([Type.String(), Type.Null()], {
    description: 'GET it (bearer token) to start the round from; null in round 1 (initialise from seed).',
  }),
  upload_url: Type.String({
    description: 'PUT the update here, adding &num_samples=<n> (it already carries ?attempt=).',
  }),
  deadline_at: Type.String({ description: 'When the round closes at the latest (ISO 8601).' }),
  accepted: Type.Optional(
    Type.Boolean({
      description: "This rank's update of this round is already accepted: wait for round_start.",
    }),
  ),
});
export type TrainingData = Static<typeof TrainingData>;

export const TaskData = Type.Object({
  id: Type.Integer(),
  type: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  config: Type.Record(Type.String(), Type.Unknown()),
  requirements: Type.Record(Type.String(), Type.Unknown()),
  attempt: Type.Integer({ description: 'The lease: send it back with progress and results.' }),
  rank: Type.Integer(),
  world_size: Type.Integer(),
  paused: Type.Optional(Type.Boolean({ description: 'The task is paused: hold until resume.' })),
  training: Type.Optional(TrainingData),
});
export type TaskData = Static<typeof TaskData>;

export const TaskMessage = Type.Object({ type: Type.Literal('task'), data: TaskData });
export type TaskMessage = Static<typeof TaskMessage>;

export const ControlMessage = Type.Object({
  type: Type.Union([Type.Literal('pause'), Type.Literal('resume'), Type.Literal('stop')]),
  task_id: Type.Integer(),
  reason: Type.Optional(Type.String()),
});
export type ControlMessage = Static<typeof ControlMessage>;

/** A new round of a training task opened: download its global model, train, upload. */
export const RoundStartMessage = Type.Composite([
  Type.Object({
    type: Type.Literal('round_start'),
    task_id: Type.Integer(),
    attempt: Type.Integer(),
    rank: Type.Integer(),
  }),
  TrainingData,
]);
export type RoundStartMessage = Static<typeof RoundStartMessage>;

/** A training task finished: its final model is at model_url; no more rounds. */
export const TrainingCompleteMessage = Type.Object({
  type: Type.Literal('training_complete'),
  task_id: Type.Integer(),
  rounds: Type.Integer(),
  model_url: Type.String(),
  model_digest: Type.String(),
});
export type TrainingCompleteMessage = Static<typeof TrainingCompleteMessage>;

export const RegisteredMessage = Type.Object({
  type: Type.Literal('registered'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  client_id: Type.String(),
  protocol_version: Type.Integer(),
  heartbeat_interval: Type.Number({ description: 'Seconds between heartbeats the server expects.' }),
  connection_timeout: Type.Number({
    description: 'Seconds of silence before the server gives up on a client.',
  }),
});
export type RegisteredMessage = Static<typeof RegisteredMessage>;

export const HeartbeatAckMessage = Type.Object({
  type: Type.Literal('heartbeat_ack'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  timestamp: Type.Number({ description: 'Server time, ms since the epoch.' }),
});

export const NoTaskMessage = Type.Object({
  type: Type.Literal('no_task'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  reason: Type.String(),
});

export const AckMessage = Type.Object({
  type: Type.Literal('ack'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  of: Type.String({ description: 'Type of the message acknowledged.' }),
  task_id: Type.Optional(Type.Integer()),
  duplicate: Type.Optional(Type.Boolean({ description: 'Already counted before; nothing changed.' })),
});

export const ErrorMessage = Type.Object({
  type: Type.Literal('error'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  code: Type.String({ description: 'Stable code, e.g. invalid_message, stale_attempt.' }),
  message: Type.String(),
});
export type ErrorMessage = Static<typeof ErrorMessage>;

/**
 * The answer to `init_distributed`, in the shape the original client reads (flat, with
 * `status`): its rank and world size, and its shard as a percent range of the data. There is
 * no torch.distributed rendezvous: ranks train apart and the server combines their work, so
 * master_addr and master_port are the client's own defaults.
 */
export const InitDistributedReply = Type.Object({
  type: Type.Literal('init_distributed'),
  reply_to: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
  task_id: Type.Integer(),
  status: Type.Union([Type.Literal('ok'), Type.Literal('error')]),
  error: Type.Optional(Type.String({ description: 'Why not, when status is error.' })),
  code: Type.Optional(Type.String({ description: 'Stable code, when status is error.' })),
  rank: Type.Optional(Type.Integer()),
  world_size: Type.Optional(Type.Integer()),
  master_addr: Type.Optional(Type.String()),
  master_port: Type.Optional(Type.Integer()),
  shard_info: Type.Optional(
    Type.Object({
      id: Type.Integer({ description: 'The rank.' }),
      total_shards: Type.Integer({ description: 'The world size.' }),
      start_point: Type.Number({ description: 'Percent of the data where the shard starts.' }),
      end_point: Type.Number({ description: 'Percent where it ends.' }),
    }),
  ),
});
export type InitDistributedReply = Static<typeof InitDistributedReply>;

/** Every message the server may send, by type. */
export const SERVER_MESSAGES = {
  registered: RegisteredMessage,
  task: TaskMessage,
  control: ControlMessage,
  heartbeat_ack: HeartbeatAckMessage,
  no_task: NoTaskMessage,
  ack: AckMessage,
  error: ErrorMessage,
  round_start: RoundStartMessage,
  training_complete: TrainingCompleteMessage,
  init_distributed: InitDistributedReply,
} as const satisfies Record<string, TSchema>;

export type ServerMessage =
  | Static<typeof RegisteredMessage>
  | TaskMessage
  | ControlMessage
  | Static<typeof HeartbeatAckMessage>
  | Static<typeof NoTaskMessage>
  | Static<typeof AckMessage>
  | ErrorMessage
  | RoundStartMessage
  | TrainingCompleteMessage
  | InitDistributedReply;

/** WebSocket close codes the server uses (4000-4999 are the application's). */
export const CLOSE_CODES = {
  /** Frame larger than MAX_MESSAGE_BYTES (RFC 6455's "message too big"). */
  tooBig: 1009,
  /** Policy violation: flooding, bad origin. */
  policy: 1008,
  /** Server shutting down: reconnect elsewhere or later. */
  goingAway: 1001,
  unauthorized: 4001,
  /** The client id is bound to another token, or already connected. */
  clientIdTaken: 4003,
  /** MAX_CLIENTS reached. */
  serverFull: 4004,
  /** Silent past CONNECTION_TIMEOUT. */
  timeout: 4008,
  /** Did not register in time. */
  registrationTimeout: 4009,
} as const;
