/**
 * The package's entry point, `import ... from 'ai-farm'`: the client SDK (the same as
 * `ai-farm/sdk`: worker and HTTP API clients, the protocol's message types and schemas) and the
 * types of the HTTP API's bodies. The server itself is started with the `ai-farm` command.
 */
export * from './worker/sdk.js';
export type { Client, ListClientsQuery } from './api/clients.js';
export type {
  AssignmentView,
  CreateTaskBatchBody,
  CreatedTaskBatch,
  CreateTaskBody,
  ListTasksQuery,
  Requirements,
  Task,
  TaskEvent,
  TaskLogLine,
  TaskMetricsView,
} from './api/tasks.js';
export type { CurrentRoundView, RoundView } from './training/training-api.js';
export { MAX_NUM_SAMPLES } from './training/training-api.js';
