import { describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, farmPerTest, startTraining } from './helpers/training.js';
import { waitFor } from './helpers/wait.js';

const trainingFarm = farmPerTest();

/** Asynchronous buffered aggregation (config.mode "async") through the real HTTP upload path. */
describe.each(DIALECTS)('async training (%s)', (dialect) => {
  it('folds updates weighted by staleness, publishes every buffer_size, refuses stale ones with 409', async () => {
    const farm = await trainingFarm(dialect, 4);
    const { ts, token } = farm;
    // polynomial a=1: s(τ) = 1 / (1 + τ). server_lr 0.5: new = old + 0.5 (mean - old).
    const t = await startTraining(farm, {
      rounds: 3,
      mode: 'async',
      buffer_size: 2,
      max_staleness: 1,
      staleness: 'polynomial',
      a: 1,
      server_lr: 0.5,
    });
    const { taskId } = t;
    expect(t.created.config).toMatchObject({
      mode: 'async',
      async: { buffer_size: 2, max_staleness: 1, staleness: 'polynomial', a: 1, server_lr: 0.5 },
    });
    const m = (x: number) => model([x, x, x, x], [x, 0, 0, -x]);
    const put = async (rank: number, from: number, x: number, numSamples: number, expected = 201) => {
      const res = await t.put(rank, m(x), { round: from, numSamples });
      expect(res.status, JSON.stringify(res.body)).toBe(expected);
      return res;
    };
    /** The global model round `r` starts from (version r-1). */
    const startOf = async (r: number) => {
      const g = await download(ts.url, `/api/tasks/${taskId}/rounds/${r}/model`, token);
      expect(g.status).toBe(200);
      return (await values(g.bytes)).a?.[0];
    };

    // Round 1 (no model yet): two fresh updates make version 1 (round 2's start), their plain mean.
    await put(0, 1, 1, 100);
    await put(1, 1, 3, 100);
    // A retried upload is a duplicate, not a second update.
    expect((await put(0, 1, 1, 100, 200)).body.duplicate).toBe(true);
    const s0 = await t.rank(0).client.next((x) => x.type === 'round_start' && x.round === 2, 20_000);
    expect(s0).toMatchObject({
      task_id: taskId,
      round: 2,
      global_model_url: `/api/tasks/${taskId}/rounds/2/model`,
    });
    expect(await startOf(2)).toBeCloseTo(2, 5);

    // Rank 2 started in round 1, lands in round 2: staleness 1, weight 200 x 1/2 = 100. It is told round 2 at once.
    await put(2, 1, 10, 200);
    const s2 = await t.rank(2).client.next((x) => x.type === 'round_start', 20_000);
    expect(s2).toMatchObject({ round: 2 });
    expect(s2.accepted).toBeUndefined();
    // Rank 0 from round 2: weight 100. Mean (10*100 + 4*100) / 200 = 7; next model = 2 + 0.5 (7 - 2) = 4.5.
    await put(0, 2, 4, 100);
    await t.rank(0).client.next((x) => x.type === 'round_start' && x.round === 3, 20_000);
    expect(await startOf(3)).toBeCloseTo(4.5, 5);

    // Rank 3 still on round 1 while round 3 is open: staleness 2 > max_staleness 1.
    const stale = await put(3, 1, 100, 100, 409);
    expect(stale.body.error).toMatchObject({
      code: 'stale_update',
      details: { staleness: 2, max_staleness: 1 },
    });
    // Refused, it is told the open round to train from instead of waiting for one.
    const s3 = await t.rank(3).client.next((x) => x.type === 'round_start', 20_000);
    expect(s3).toMatchObject({ round: 3 });
    const current = await ts.api('GET', `/api/tasks/${taskId}/rounds/current`);
    expect(current.body).toMatchObject({ round: 3, mode: 'async', refused_stale: 1 });
    // A round not opened yet is no round to start from.
    expect((await put(3, 4, 1, 100, 409)).body.error).toMatchObject({ code: 'round_closed' });

    // Round 3's buffer: rank 1 from 2 (weight 200/2 = 100, x 6), rank 0 from 3 (weight 100, x 2).
    // Mean 4; final = 4.5 + 0.5 (4 - 4.5) = 4.25.
    await put(1, 2, 6, 200);
    await put(0, 3, 2, 100);
    const done = await t.rank(0).client.type('training_complete', 20_000);
    expect(done).toMatchObject({ task_id: taskId, rounds: 3 });
    const final = await download(ts.url, `/api/tasks/${taskId}/model`, token);
    expectClose((await values(final.bytes)).a, [4.25, 4.25, 4.25, 4.25]);

    const events = await ts.api('GET', `/api/tasks/${taskId}/events?limit=100`);
    const items = (events.body.items ?? events.body) as { kind: string; data: { staleness?: number[] } }[];
    const closes = items.filter((e) => e.kind === 'round_closed' || e.kind === 'completed');
    expect(closes.map((e) => e.data.staleness).reverse()).toEqual([
      [0, 0],
      [0, 1],
      [0, 1],
    ]);
    expect(items.filter((e) => e.kind === 'update_stale')).toHaveLength(1);
  });

  it('takes an update that arrives while its version is made into the next one, never refusing it', async () => {
    const farm = await trainingFarm(dialect, 3);
    const t = await startTraining(farm, { rounds: 3, mode: 'async', buffer_size: 1 });
    const m = (x: number) => model([x, x, x, x], [x, 0, 0, -x]);
    // Three updates from round 1 at once: whichever closes version 1, the others find it
    // closing (or closed) and go into the next buffers: all accepted, one per version.
    const answers = await Promise.all([0, 1, 2].map((rank) => t.put(rank, m(rank + 1), { round: 1 })));
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201]);
    await t.rank(0).client.type('training_complete', 20_000);
    const rounds = await farm.ts.api('GET', `/api/tasks/${t.taskId}/rounds`);
    const items = (rounds.body.items ?? rounds.body) as {
      round: number;
      metrics: { staleness?: number[] };
    }[];
    const staleness = items
      .filter((r) => r.metrics?.staleness)
      .sort((a, b) => a.round - b.round)
      .map((r) => r.metrics.staleness);
    expect(staleness).toEqual([[0], [1], [2]]);
  });

  it('pauses, resumes and stops an async task as a sync one', async () => {
    const farm = await trainingFarm(dialect, 2);
    const t = await startTraining(farm, { rounds: 3, mode: 'async', buffer_size: 1 });
    const status = (s: string) => farm.ts.api('PUT', `/api/tasks/${t.taskId}/status`, { status: s });
    const m = model([1, 1, 1, 1], [1, 0, 0, -1]);
    expect((await status('paused')).status).toBe(200);
    await t.rank(0).client.next((x) => x.type === 'pause', 10_000);
    // An update that arrives while paused is kept, and its round closed paused.
    expect((await t.put(0, m, { round: 1 })).status).toBe(201);
    await t.rank(0).client.next((x) => x.type === 'round_start' && x.round === 2, 20_000);
    expect((await status('running')).status).toBe(200);
    await t.rank(0).client.next((x) => x.type === 'resume', 10_000);
    expect((await t.put(1, m, { round: 1 })).status).toBe(201);
    // Rank 1's update (staleness 1) fills round 2's buffer: round 3 opens.
    await waitFor('round 3 open', async () => {
      const current = await farm.ts.api('GET', `/api/tasks/${t.taskId}/rounds/current`);
      return current.body.round === 3 && current.body.state === 'open';
    });
    expect((await status('cancelled')).status).toBe(200);
    const late = await t.put(0, m, { round: 3 });
    expect(late.status).toBe(409);
    expect((await farm.ts.api('GET', `/api/tasks/${t.taskId}`)).body.status).toBe('cancelled');
  });

  it('refuses async settings that cannot work with a 400 naming the field', async () => {
    const farm = await trainingFarm(dialect, 1);
    const create = (config: Record<string, unknown>, worldSize = 4) =>
      farm.ts.api('POST', '/api/tasks', { type: 'command', requirements: {}, world_size: worldSize, config });
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [
        { mode: 'async', aggregation: { strategy: 'krum', f: 0 } },
        'aggregation/strategy',
        /krum.*async.*every update/,
      ],
      [{ mode: 'async', aggregation: { strategy: 'median' } }, 'aggregation/strategy', /median/],
      [{ mode: 'async', buffer_size: 5 }, 'buffer_size', /at most world_size/],
      [{ mode: 'async', buffer_size: 0 }, 'buffer_size', /must be >= 1/],
      [{ mode: 'async', max_staleness: -1 }, 'max_staleness', /must be >= 0/],
      [{ mode: 'async', server_lr: 1.5 }, 'server_lr', /must be <= 1/],
      [{ mode: 'async', server_lr: 0 }, 'server_lr', /must be > 0/],
      [{ mode: 'async', staleness: 'linear' }, 'staleness', /./],
      [{ mode: 'async', staleness: 'constant', a: 1 }, 'a', /not used/],
      [{ mode: 'async', staleness: 'polynomial', b: 1 }, 'b', /hinge/],
      [{ mode: 'later' }, 'mode', /./],
      [{ buffer_size: 2 }, 'buffer_size', /only with mode "async"/],
      [{ server_lr: 0.5 }, 'server_lr', /only with mode "async"/],
    ];
    for (const [config, field, message] of cases) {
      const res = await create({ rounds: 2, ...config });
      expect(res.status, `${JSON.stringify(config)} ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error.message).toContain(`body/config/${field}`);
      expect(res.body.error.message).toMatch(message);
    }
    const ok = await create({ rounds: 2, mode: 'async', aggregation: { strategy: 'fedprox', mu: 0.1 } });
    expect(ok.status).toBe(201);
    expect(ok.body.config.async).toEqual({
      buffer_size: 2,
      max_staleness: 10,
      staleness: 'polynomial',
      a: 0.5,
      b: 4,
      server_lr: 1,
    });
  });
});
