import type { ColumnType, Generated } from 'kysely';
import { TASK_STATUSES, type TaskStatus } from '../api/tasks.js';

/**
 * Row types of the database, table by table. Column names are the seed's (snake_case)
 * and are also the API's field names. These are storage types: API types live apart.
 *
 * JSON columns read back as a string (SQLite, MariaDB) or a parsed value (MySQL 8):
 * repositories normalise them with `parseJson`.
 */
type Json = ColumnType<unknown, string, string>;
type NullableJson = ColumnType<unknown, string | null | undefined, string | null>;
/** 'YYYY-MM-DD HH:MM:SS[.fff]' in UTC on both dialects. */
type Time = string;

// The task statuses are the API's words (api/tasks.ts), stored as they are.
export { TASK_STATUSES, type TaskStatus };

export const ASSIGNMENT_STATUSES = [
  'assigned',
  'training',
  'completed',
  'failed',
  'paused',
  'lost',
  'cancelled',
] as const;
export type AssignmentStatus = (typeof ASSIGNMENT_STATUSES)[number];

export const ROLES = ['admin', 'user', 'worker'] as const;
export type Role = (typeof ROLES)[number];

export interface TasksTable {
  id: Generated<number>;
  type: string;
  requirements: Json;
  status: TaskStatus;
  client_id: string | null;
  created_at: Time;
  updated_at: Time;
  result: NullableJson;
  error_log: string | null;
  priority: ColumnType<number, number | undefined, number>;
  config: NullableJson;
  checkpoint_path: string | null;
  // AI Farm's additions.
  name: string | null;
  created_by: string | null;
  /** Who created it, by identity: `token:<id>` or `user:<id>` (src/auth/principal.ts ownerOf). */
  owner: string | null;
  progress: ColumnType<number, number | undefined, number>;
  metrics: NullableJson;
  attempts: ColumnType<number, number | undefined, number>;
  max_attempts: ColumnType<number, number | undefined, number>;
  world_size: ColumnType<number, number | undefined, number>;
  unschedulable_reason: string | null;
  started_at: Time | null;
  finished_at: Time | null;
}

export interface TaskAssignmentsTable {
  id: Generated<number>;
  task_id: number;
  client_id: string;
  assigned_at: Time;
  status: AssignmentStatus;
  rank: number;
  checkpoint_path: string | null;
  // AI Farm's additions.
  attempt: number;
  progress: ColumnType<number, number | undefined, number>;
  updated_at: Time;
  finished_at: Time | null;
  error: string | null;
}

export interface ClientsTable {
  id: string;
  cpu_info: Json;
  ram_info: Json;
  gpu_info: NullableJson;
  session_info: NullableJson;
  last_seen: Time;
  status: 'active' | 'inactive';
  // AI Farm's additions.
  hostname: string | null;
  token_id: string | null;
  connected: ColumnType<number, number | undefined, number>;
  cordoned: ColumnType<number, number | undefined, number>;
  registered_at: Time;
  utilization: NullableJson;
  /** The server instance holding its socket (or its leases after a takeover); migration 006. */
  instance_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface ApiTokensTable {
  id: string;
  name: string;
  role: Role;
  token_hash: string;
  created_at: Time;
  created_by: string | null;
  last_used_at: Time | null;
  revoked_at: Time | null;
}

export interface UsersTable {
  id: Generated<number>;
  username: string;
  password_hash: string;
  role: 'admin';
  created_at: Time;
  updated_at: Time;
}

export interface TaskEventsTable {
  id: Generated<number>;
  task_id: number;
  at: Time;
  kind: string;
  message: string;
  data: NullableJson;
}

export interface TaskMetricsTable {
  id: Generated<number>;
  task_id: number;
  at: Time;
  rank: number;
  attempt: number;
  round: number | null;
  progress: number;
  metrics: Json;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: Time;
  actor: string;
  action: string;
  target: string;
  detail: NullableJson;
}

/** An admin-panel login: the cookie's secret is stored only as its SHA-256 (`id`). */
export interface SessionsTable {
  id: string;
  user_id: number;
  created_at: Time;
  last_seen_at: Time;
  /** Idle expiry, pushed forward while the session is used (never past `absolute_expires_at`). */
  expires_at: Time;
  absolute_expires_at: Time;
  ip: string | null;
  user_agent: string | null;
}

/** One failed login; counted per address and per username to throttle guessing. */
export interface LoginFailuresTable {
  id: Generated<number>;
  at: Time;
  ip: string;
  username: string;
}

/** One round of a distributed training task (the round journal, migration 004). */
export interface TrainingRoundsTable {
  id: Generated<number>;
  task_id: number;
  round: number;
  state: 'open' | 'closed';
  opened_at: Time;
  deadline_at: Time;
  closed_at: Time | null;
  /** The global model this round starts from (null in round 1 without an initial model). */
  global_path: string | null;
  global_digest: string | null;
  num_updates: ColumnType<number, number | undefined, number>;
  /** Deadlines passed below quorum. */
  extensions: ColumnType<number, number | undefined, number>;
  metrics: NullableJson;
  /** Over-selection: updates refused because the round had closed on its first K (migration 013). */
  refused_late: ColumnType<number, number | undefined, number>;
}

/** An update accepted into a round: at most one per (task, round, rank). */
export interface RoundUpdatesTable {
  id: Generated<number>;
  task_id: number;
  round: number;
  rank: number;
  attempt: number;
  client_id: string;
  num_samples: number;
  path: string;
  digest: string;
  bytes: number;
  metrics: NullableJson;
  accepted_at: Time;
  /** The round whose aggregate the update went into: `round` in sync mode; async, the round open when it was accepted. */
  buffer_round: number | null;
}

export interface TaskLogsTable {
  id: Generated<number>;
  task_id: number;
  at: Time;
  rank: number;
  attempt: number;
  line: string;
}

/** A running server instance and its heartbeat (migration 006). */
export interface ServerInstancesTable {
  id: string;
  host: string;
  pid: number;
  started_at: Time;
  heartbeat_at: Time;
}

/** The instance that aggregates a training task's rounds (migration 006). */
export interface TrainingOwnersTable {
  task_id: number;
  instance_id: string;
  acquired_at: Time;
}

/** What a code blob holds: one file, or a folder as tar.gz. */
export type CodeKind = 'file' | 'folder';

/** A content-addressed code blob under MODEL_CACHE_DIR (migration 009). */
export interface CodeBundlesTable {
  /** 'sha256:<64 hex>' of the bytes as stored. */
  digest: string;
  kind: CodeKind;
  size: number;
  /** Entries of the archive (1 for a file). */
  entries: number;
  created_by: string | null;
  created_at: Time;
}

/** An immutable version of registered model code (migration 009). */
export interface ModelVersionsTable {
  name: string;
  version: string;
  digest: string;
  kind: CodeKind;
  size: number;
  /** The file's name for a single-file model (what it is unpacked as). */
  file_name: string | null;
  created_by: string | null;
  created_at: Time;
}

/** The code a task runs (migration 009). */
export interface TaskCodeTable {
  task_id: number;
  digest: string;
  /** 'name@version' when the task named a registered model. */
  model: string | null;
}

/** A resumable (tus) upload of an update, not finished yet (migration 011). Times: epoch ms. */
export interface UpdateUploadsTable {
  id: string;
  task_id: number;
  round: number;
  rank: number;
  attempt: number;
  client_id: string;
  token_id: string;
  num_samples: number;
  /** X-AI-Farm-Metrics of the creation request, as JSON text. */
  metrics: string | null;
  /** Upload-Length. */
  length: number;
  /** Bytes stored (the tus Upload-Offset). */
  received: number;
  /** sha256 of each whole 4 MiB piece received, packed. */
  piece_digests: Buffer;
  path: string;
  created_at: number;
  expires_at: number;
}

/** The whole database, for Kysely. */
export interface Database {
  tasks: TasksTable;
  task_assignments: TaskAssignmentsTable;
  clients: ClientsTable;
  api_tokens: ApiTokensTable;
  users: UsersTable;
  task_events: TaskEventsTable;
  task_metrics: TaskMetricsTable;
  task_logs: TaskLogsTable;
  audit_log: AuditLogTable;
  sessions: SessionsTable;
  login_failures: LoginFailuresTable;
  training_rounds: TrainingRoundsTable;
  round_updates: RoundUpdatesTable;
  server_instances: ServerInstancesTable;
  training_owners: TrainingOwnersTable;
  code_bundles: CodeBundlesTable;
  model_versions: ModelVersionsTable;
  task_code: TaskCodeTable;
  update_uploads: UpdateUploadsTable;
}
