/**
 * Optional TorchServe registration (the seed's model serving). When TORCHSERVE_URL is set, a
 * finished task's model is registered through TorchServe's management API:
 *
 *   POST {TORCHSERVE_URL}/models?url={model_url}&model_name=ai-farm-task-{id}
 *        &initial_workers=1&synchronous=false
 *
 * `model_url` is the final model's address on the model server (MODEL_SERVER_PORT,
 * /tasks/{id}/model). TorchServe loads only model archives (.mar: weights plus a handler) and
 * fetches URLs without AI Farm's bearer token, so registration succeeds only behind a
 * TorchServe set up for it (docs/training.md, "TorchServe"); a refusal is logged and recorded
 * as a task event, and never fails the task.
 */
import type { Kysely } from 'kysely';
import type { Logger } from '../../observability/logger.js';
import type { Database } from '../../storage/schema.js';
import { insertTaskEvent } from '../../storage/task-repo.js';
import { toDbTime, type Clock } from '../../storage/values.js';

export interface TorchServeRegistration {
  /** The request sent (for logs and events). */
  request: string;
  status: number;
  body: string;
}

export async function registerWithTorchServe(
  torchserveUrl: string,
  taskId: number,
  modelUrl: string,
  fetchFn: typeof fetch = fetch,
): Promise<TorchServeRegistration> {
  const base = torchserveUrl.replace(/\/+$/, '');
  const q = new URLSearchParams({
    url: modelUrl,
    model_name: `ai-farm-task-${taskId}`,
    initial_workers: '1',
    synchronous: 'false',
  });
  const request = `${base}/models?${q.toString()}`;
  const res = await fetchFn(request, { method: 'POST', signal: AbortSignal.timeout(30_000) });
  return { request, status: res.status, body: (await res.text()).slice(0, 2000) };
}

/**
 * The hook run when a training task completes (RoundCoordinator `onComplete`) with TORCHSERVE_URL
 * set: registers the task's final model and records TorchServe's answer as a task event.
 */
export function torchServeHook(d: {
  torchserveUrl: string;
  /** The model server's base URL, known once it listens. */
  modelBase: () => string;
  db: Kysely<Database>;
  clock: Clock;
  logger: Logger;
}): (taskId: number) => Promise<void> {
  return async (taskId) => {
    const r = await registerWithTorchServe(d.torchserveUrl, taskId, `${d.modelBase()}/tasks/${taskId}/model`);
    d.logger.info({ taskId, request: r.request, status: r.status }, 'TorchServe registration answered');
    await insertTaskEvent(d.db, {
      task_id: taskId,
      at: toDbTime(d.clock.now(), true),
      kind: r.status < 300 ? 'torchserve_registered' : 'torchserve_refused',
      message: `POST ${r.request} -> ${r.status}`,
      data: { status: r.status, body: r.body },
    });
  };
}
