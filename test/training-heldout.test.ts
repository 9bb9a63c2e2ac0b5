import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initParams, mlpLayout, saveWeights } from '../src/mnist/index.js';
import { startTraining, trainingFarm, type TrainingFarm } from './helpers/training.js';

// A train_mnist round records the held-out accuracy of its new global model (evaluated in a
// worker thread), next to the ranks' own metrics weighted by their samples.

let farm: TrainingFarm;
let dir: string;
beforeAll(async () => {
  farm = await trainingFarm('sqlite', 2);
  dir = await mkdtemp(join(tmpdir(), 'heldout-'));
});
afterAll(async () => {
  await farm?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('train_mnist round metrics', () => {
  it('adds heldout_accuracy and heldout_loss of the aggregate', async () => {
    const { ts, clients } = farm;
    const { taskId, ranks, put } = await startTraining(
      farm,
      { rounds: 1, hidden: 16 },
      { type: 'train_mnist' },
    );
    for (const [i, { rank }] of ranks.entries()) {
      const path = join(dir, `w${i}.safetensors`);
      await saveWeights(path, mlpLayout(16), initParams(16, i));
      const r = await put(rank, await readFile(path), {
        numSamples: rank === 0 ? 1000 : 3000,
        metrics: { loss: rank === 0 ? 1 : 2, accuracy: rank === 0 ? 0.5 : 0.9 },
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    await Promise.all(clients.map((c) => c.type('training_complete', 30_000)));
    const m = await ts.api('GET', `/api/tasks/${taskId}/metrics`);
    const round = m.body.rounds[0].metrics;
    expect(round.loss).toBeCloseTo(1.75, 6);
    expect(round.accuracy).toBeCloseTo(0.8, 6);
    expect(round.num_samples).toBe(4000);
    expect(round.heldout_accuracy).toBeGreaterThanOrEqual(0);
    expect(round.heldout_accuracy).toBeLessThanOrEqual(1);
    expect(round.heldout_loss).toBeGreaterThan(0);
    const task = await ts.api('GET', `/api/tasks/${taskId}`);
    expect(task.body.result.metrics.heldout_accuracy).toBe(round.heldout_accuracy);
  });
});
