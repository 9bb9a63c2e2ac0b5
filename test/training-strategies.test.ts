import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, startTraining, trainingFarm, type TrainingFarm } from './helpers/training.js';

// Every strategy end to end: five ranks, one of them an outlier, one round, and the final
// model compared with results computed by hand (see the comments).

let farm: TrainingFarm;
beforeAll(async () => {
  farm = await trainingFarm('sqlite', 5);
});
afterAll(async () => farm?.stop());

const A = [
  [1, 2, 3, 4],
  [2, 3, 4, 5],
  [3, 4, 5, 6],
  [4, 5, 6, 7],
  [100, -100, 50, 0],
];
const B = [
  [0, 0, 0, 0],
  [1, 0, 0, 0],
  [2, 0, 0, 0],
  [3, 0, 0, 0],
  [1000, 0, 0, 0],
];
const SAMPLES = [10, 10, 20, 20, 40];

// FedAvg weights by samples: a0 = (1*10 + 2*10 + 3*20 + 4*20 + 100*40) / 100 = 41.7, ...
const fedavg = (col: (r: number) => number) => SAMPLES.reduce((s, w, r) => s + w * col(r), 0) / 100;
const CASES: { name: string; aggregation: Record<string, unknown>; a: number[]; b: number[] }[] = [
  {
    name: 'fedavg',
    aggregation: { strategy: 'fedavg' },
    a: [0, 1, 2, 3].map((i) => fedavg((r) => A[r]![i]!)),
    b: [fedavg((r) => B[r]![0]!), 0, 0, 0],
  },
  {
    name: 'fedprox',
    aggregation: { strategy: 'fedprox', mu: 0.01 },
    a: [0, 1, 2, 3].map((i) => fedavg((r) => A[r]![i]!)),
    b: [fedavg((r) => B[r]![0]!), 0, 0, 0],
  },
  // Per coordinate: a0 {1,2,3,4,100} -> 3, a1 {2,3,4,5,-100} -> 3, a2 {3,4,5,6,50} -> 5,
  // a3 {4,5,6,7,0} -> 5, b0 {0,1,2,3,1000} -> 2.
  { name: 'median', aggregation: { strategy: 'median' }, a: [3, 3, 5, 5], b: [2, 0, 0, 0] },
  // Trim one value from each end, mean of the middle three: the same figures here.
  {
    name: 'trimmed_mean',
    aggregation: { strategy: 'trimmed_mean', trim: 1 },
    a: [3, 3, 5, 5],
    b: [2, 0, 0, 0],
  },
  // Krum, f = 1: score = squared distance to the n - f - 2 = 2 nearest. d(r0,r1) = d(r1,r2) =
  // d(r2,r3) = 5, d(r0,r2) = d(r1,r3) = 20, d(r0,r3) = 45: scores 25, 10, 10, 25, huge. Rank 1
  // wins the tie (earlier input).
  { name: 'krum', aggregation: { strategy: 'krum', f: 1 }, a: A[1]!, b: B[1]! },
  // Multi-Krum, m = 2: the mean of ranks 1 and 2.
  {
    name: 'multi_krum',
    aggregation: { strategy: 'multi_krum', f: 1, m: 2 },
    a: [2.5, 3.5, 4.5, 5.5],
    b: [1.5, 0, 0, 0],
  },
];

describe('aggregation strategies end to end', () => {
  it.each(CASES)('$name', async ({ aggregation, a, b }) => {
    const { ts, token, clients } = farm;
    const { taskId, ranks, put } = await startTraining(farm, { rounds: 1, aggregation });
    await Promise.all(
      ranks.map(async ({ rank: r }) => {
        const res = await put(r, model(A[r]!, B[r]!), { numSamples: SAMPLES[r]! });
        expect(res.status, JSON.stringify(res.body)).toBe(201);
      }),
    );
    await Promise.all(clients.map((c) => c.type('training_complete', 20_000)));
    const final = await download(ts.url, `/api/tasks/${taskId}/model`, token);
    expect(final.status).toBe(200);
    const v = await values(final.bytes);
    expectClose(v.a, a, 4);
    expectClose(v.b, b, 4);
  });

  it('refuses training configs that cannot work, naming the field', async () => {
    const bad = async (config: Record<string, unknown>, world_size = 5) =>
      (await farm.ts.api('POST', '/api/tasks', { type: 'command', requirements: {}, world_size, config }))
        .body.error?.message as string;
    expect(await bad({ rounds: 1, aggregation: { strategy: 'nope' } })).toMatch(
      /^body\/config\/aggregation\/strategy/,
    );
    expect(await bad({ rounds: 0 })).toMatch(/^body\/config\/rounds/);
    expect(await bad({ rounds: 1, quorum: 6 })).toMatch(/^body\/config\/quorum/);
    expect(await bad({ rounds: 1, aggregation: { strategy: 'krum', f: 2 } })).toMatch(
      /^body\/config\/aggregation\/f/,
    );
    expect(await bad({ rounds: 1, aggregation: { strategy: 'fedprox' } })).toMatch(
      /^body\/config\/aggregation\/mu/,
    );
    expect(await bad({ rounds: 1, shards: [[0, 0.5]] })).toMatch(/^body\/config\/shards/);
    expect(
      await bad(
        {
          rounds: 1,
          shards: [
            [0, 0.5],
            [0.5, 1.5],
          ],
        },
        2,
      ),
    ).toMatch(/^body\/config\/shards/);
    expect(await bad({ rounds: 1, n_clients: 3 }, 5)).toMatch(/^body\/config\/n_clients/);
    // n_clients alone sets world_size; defaults are filled.
    const ok = await farm.ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: { min_ram_gb: 100000 },
      config: { rounds: 2, n_clients: 2, epochs: 3 },
    });
    expect(ok.status).toBe(201);
    expect(ok.body.world_size).toBe(2);
    expect(ok.body.config).toMatchObject({ rounds: 2, epochs: 3, batch_size: 32, quorum: 2, seed: 0 });
    expect(ok.body.config.n_clients).toBeUndefined();
    await farm.ts.api('DELETE', `/api/tasks/${ok.body.id}`);
  });
});
