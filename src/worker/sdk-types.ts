import type { Static } from '@sinclair/typebox';
import type {
  AckMessage,
  ControlMessage,
  HeartbeatAckMessage,
  RegisteredMessage,
  RoundStartMessage,
  SystemInfo,
  TaskData,
  TaskProgressMessage,
  TaskResultMessage,
  TrainingCompleteMessage,
  Utilization,
} from '../api/protocol.js';
import type { BackoffOptions } from './backoff.js';
import type { ProtocolError, WorkerClientError } from './sdk-errors.js';

export type Ack = Static<typeof AckMessage>;
export type HeartbeatAck = Static<typeof HeartbeatAckMessage>;
/** A task_progress without the fields the client fills in (type, msg_id, client_id). */
export type ProgressReport = Omit<TaskProgressMessage, 'type' | 'msg_id' | 'client_id'>;
/** A task_result without the fields the client fills in. */
export type ResultReport = Omit<TaskResultMessage, 'type' | 'msg_id' | 'client_id'>;

/** How a WorkerClient connects. Only `url` and `systemInfo` are required. */
export interface WorkerClientOptions {
  /** The gateway: ws://host:8765/ or ws://host:8000/ws (see resolveServerUrls). */
  url: string;
  /** A worker-role API token, sent as `Authorization: Bearer`. */
  token?: string | undefined;
  /** This machine's hardware; a function is called again before every (re)registration. */
  systemInfo: SystemInfo | (() => SystemInfo | Promise<SystemInfo>);
  /** The client id to register with; later the id the server confirmed is reused. */
  id?: string | undefined;
  /** Tasks this client runs at once (sent as max_tasks). Default: left to the server. */
  maxTasks?: number | undefined;
  /** Task types this client can run (sent as task_types). */
  taskTypes?: string[] | undefined;
  /** Utilization sent with each heartbeat. Default: none. */
  utilization?: (() => Utilization | undefined | Promise<Utilization | undefined>) | undefined;
  /** How long a request waits for its ack or error, ms. Default 10 000. */
  requestTimeoutMs?: number;
  /** Reconnect after a drop. Default true. */
  reconnect?: boolean;
  /** Consecutive failed attempts before giving up. Default Infinity. */
  maxReconnectAttempts?: number;
  /** Delays between attempts. Defaults: 500 ms doubling to 30 s, half of each random. */
  backoff?: BackoffOptions;
  /** A connection registered this long counts as stable: the backoff starts over. Default 30 000 ms. */
  stableAfterMs?: number;
  /** Largest frame accepted from the server, bytes. Default 16 MiB. */
  maxPayload?: number;
  /** Time allowed for the WebSocket handshake, ms. Default 10 000. */
  handshakeTimeoutMs?: number;
}

/** A dropped connection, and when the client tries again. */
export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Consecutive attempts so far, and the delay before the next one (null: no retry). */
  attempt: number;
  reconnectInMs: number | null;
}

/** Events of a WorkerClient, with their arguments. */
export interface WorkerClientEvents {
  /** Registered (again): the id to persist is `info.client_id`. */
  registered: [info: RegisteredMessage];
  /** Work assigned to this client. Reply with sendProgress / sendResult, naming its attempt. */
  task: [task: TaskData];
  pause: [control: ControlMessage];
  resume: [control: ControlMessage];
  stop: [control: ControlMessage];
  /** A training task's next round opened (docs/training.md): download, train, upload. */
  round_start: [message: RoundStartMessage];
  /** A training task finished: no more rounds. */
  training_complete: [message: TrainingCompleteMessage];
  disconnected: [info: DisconnectInfo];
  /** An `error` from the server that answers no pending request. */
  server_error: [error: ProtocolError];
  /** A frame that is not a valid server message; skipped. */
  invalid_message: [problem: string, text: string];
  /** Final: close() was called, or the client gave up (`error` says why). */
  closed: [error?: WorkerClientError];
}
