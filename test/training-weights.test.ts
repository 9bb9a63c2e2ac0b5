/**
 * One rank cannot poison the global model with its weight (issue 11 point 3): num_samples is a
 * bounded integer, a round's aggregate is finite before it is published, and max_weight_share
 * caps the share of one rank's self-reported sample count.
 */
import { describe, expect, it } from 'vitest';
import { MAX_NUM_SAMPLES } from '../src/training/training-api.js';
import { DIALECTS } from './helpers/db.js';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, farmPerTest, startTraining } from './helpers/training.js';

const trainingFarm = farmPerTest();

/** Starts a two-rank, one-round training task; returns a PUT of rank r's update. */
async function twoRanks(dialect: (typeof DIALECTS)[number], aggregation: Record<string, unknown>) {
  const f = await trainingFarm(dialect, 2);
  const t = await startTraining(f, { rounds: 1, aggregation });
  const put = (rank: number, numSamples: number | string, body: Uint8Array) =>
    t.put(rank, body, { numSamples: numSamples as number });
  return { f, taskId: t.taskId, put };
}

describe.each(DIALECTS)('update weights (%s)', (dialect) => {
  it('accepts only integer sample counts from 1 to the documented maximum', async () => {
    const { f, taskId, put } = await twoRanks(dialect, { strategy: 'fedavg' });
    const body = model([1, 1, 1, 1], [1, 1, 1, 1]);
    for (const bad of ['1e39', '1e308', '5e-324', 'Infinity', '-Infinity', 'NaN', '0', '-1', '1.5', '']) {
      const res = await put(0, bad, body);
      expect(res.status, `num_samples=${bad}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error.message).toMatch(/num_samples/);
    }
    const over = await put(0, MAX_NUM_SAMPLES + 1, body);
    expect(over.status).toBe(400);
    // Nothing was journaled by the refusals.
    const round = await f.ts.api('GET', `/api/tasks/${taskId}/rounds/current`);
    expect(round.body.num_updates).toBe(0);
    // The maximum itself is a valid weight, on both ranks: the mean stays exact.
    expect((await put(0, MAX_NUM_SAMPLES, model([1, 1, 1, 1], [0, 0, 0, 0]))).status).toBe(201);
    expect((await put(1, MAX_NUM_SAMPLES, model([3, 3, 3, 3], [0, 0, 0, 0]))).status).toBe(201);
    const done = await f.clients[0]!.type('training_complete', 30_000);
    const final = await download(f.ts.url, done.model_url as string, f.token);
    expectClose((await values(final.bytes)).a, [2, 2, 2, 2]);
    expect((await f.ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });

  it('publishes a finite aggregate when finite updates overflow a float32 sum', async () => {
    const { f, taskId, put } = await twoRanks(dialect, { strategy: 'fedavg' });
    // Both near the float32 maximum: their float32 sum is Inf, their mean is not.
    const big = 3e38;
    expect((await put(0, 1, model([big, big, 1, 1], [0, 0, 0, 0]))).status).toBe(201);
    expect((await put(1, 1, model([big, -big, 1, 1], [0, 0, 0, 0]))).status).toBe(201);
    const done = await f.clients[0]!.type('training_complete', 30_000);
    const final = await download(f.ts.url, done.model_url as string, f.token);
    const a = (await values(final.bytes)).a!;
    expect(a.every(Number.isFinite), `aggregate ${JSON.stringify(a)}`).toBe(true);
    expect(a[0]! / big).toBeCloseTo(1, 5);
    expectClose(a.slice(1), [0, 1, 1]);
    const task = await f.ts.api('GET', `/api/tasks/${taskId}`);
    expect(task.body.status).toBe('completed');
  });

  it('caps the share of the weight one rank may carry (max_weight_share)', async () => {
    const { f, taskId, put } = await twoRanks(dialect, { strategy: 'fedavg', max_weight_share: 0.5 });
    // Rank 1 claims a billion samples against rank 0's ten: capped to half the weight, the plain mean.
    expect((await put(0, 10, model([0, 0, 0, 0], [2, 2, 2, 2]))).status).toBe(201);
    expect((await put(1, MAX_NUM_SAMPLES, model([4, 4, 4, 4], [0, 0, 0, 0]))).status).toBe(201);
    const done = await f.clients[0]!.type('training_complete', 30_000);
    const final = await download(f.ts.url, done.model_url as string, f.token);
    const v = await values(final.bytes);
    expectClose(v.a, [2, 2, 2, 2]);
    expectClose(v.b, [1, 1, 1, 1]);
    expect((await f.ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });

  it('takes a max_weight_share within (0, 1] and refuses any other', async () => {
    const farm = await trainingFarm(dialect, 0);
    const ok = await farm.ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 2,
      config: { rounds: 1, aggregation: { strategy: 'fedavg', max_weight_share: 0.5 } },
    });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.config.aggregation).toEqual({ strategy: 'fedavg', max_weight_share: 0.5 });
    for (const share of [0, 1.5, -0.1]) {
      const res = await farm.ts.api('POST', '/api/tasks', {
        type: 'command',
        requirements: {},
        world_size: 2,
        config: { rounds: 1, aggregation: { strategy: 'fedavg', max_weight_share: share } },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error.message).toMatch(/max_weight_share/);
    }
  });
});
