/**
 * The AI Farm client SDK, the package's `ai-farm/sdk` export: a typed client of the worker
 * protocol (src/api/protocol.ts) and of the HTTP API. The reference worker (`ai-farm
 * worker`) is built on it; so can any other program:
 *
 *     import { WorkerClient, collectSystemInfo } from 'ai-farm/sdk';
 *     const client = new WorkerClient({ url: 'ws://farm:8000/ws', token, systemInfo: () => collectSystemInfo() });
 *     client.on('task', async (task) => {
 *       await client.sendProgress({ task_id: task.id, progress: 50, attempt: task.attempt, rank: task.rank });
 *       await client.sendResult({ task_id: task.id, status: 'completed', attempt: task.attempt, rank: task.rank });
 *     });
 *     await client.connect();
 *
 * docs/workers.md describes it further.
 */
export { WorkerClient } from './worker-client.js';
export type * from './sdk-types.js';
export { ProtocolError, WorkerClientError } from './sdk-errors.js';
export { ApiClient, ApiError, type ApiClientOptions, type TaskList } from '../api/api-client.js';
export { Backoff, type BackoffOptions } from './backoff.js';
export { parseServerMessage, type ParsedServerMessage } from './messages.js';
export { resolveServerUrls, type ServerUrls } from '../api/server-url.js';
export { collectSystemInfo, collectUtilization, type SessionInfo } from './system-info.js';
export {
  CommandExecutor,
  ExecutorRegistry,
  defaultExecutors,
  type Execution,
  type ExecutionContext,
  type ExecutionOutcome,
  type Executor,
  type TrainingEvent,
} from './executors/index.js';
export { TrainMnistExecutor } from './executors/train-mnist.js';
export * from '../api/protocol.js';
