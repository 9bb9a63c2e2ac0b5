import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { model } from './helpers/safetensors.js';
import { startTraining, trainingFarm, type TrainingFarm } from './helpers/training.js';
import { waitFor } from './helpers/wait.js';

// TorchServe cannot be installed here (no PyPI), so a real HTTP server stands in for its
// management API and records what AI Farm sends when a training task finishes.

let fake: Server;
const seen: { method: string; url: string }[] = [];
let farm: TrainingFarm;

beforeAll(async () => {
  fake = createServer((req: IncomingMessage, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '' });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'Model "ai-farm-task" registered' }));
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const port = (fake.address() as AddressInfo).port;
  farm = await trainingFarm('sqlite', 1, { TORCHSERVE_URL: `http://127.0.0.1:${port}/` });
});
afterAll(async () => {
  await farm?.stop();
  await new Promise((r) => fake?.close(r));
});

describe('TorchServe registration', () => {
  it('registers a finished model through the management API', async () => {
    const { ts, clients } = farm;
    const { taskId, put } = await startTraining(farm, { rounds: 1 });
    expect((await put(0, model([1, 2, 3, 4], [5, 6, 7, 8]))).status).toBe(201);
    await clients[0]!.type('training_complete');
    await waitFor('the registration request', () => seen.length > 0, 5000, { everyMs: 50 });
    expect(seen).toHaveLength(1);
    const req = new URL(seen[0]!.url, 'http://x');
    expect(seen[0]!.method).toBe('POST');
    expect(req.pathname).toBe('/models');
    expect(Object.fromEntries(req.searchParams)).toEqual({
      url: `${ts.server.modelUrl}/tasks/${taskId}/model`,
      model_name: `ai-farm-task-${taskId}`,
      initial_workers: '1',
      synchronous: 'false',
    });
    await waitFor(
      'the torchserve_registered event',
      async () => {
        const events = (await ts.api('GET', `/api/tasks/${taskId}/events`)).body.items as { kind: string }[];
        return events.some((e) => e.kind === 'torchserve_registered');
      },
      2500,
      { everyMs: 50 },
    );
  });
});
