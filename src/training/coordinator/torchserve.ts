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
