import { afterEach, describe, expect, it } from 'vitest';
import {
  download,
  expectClose,
  model,
  taskMessage,
  trainingFarm,
  upload,
  values,
  type TrainingFarm,
} from './helpers/training.js';
import { sleep } from './helpers/wait.js';

// Rounds that do not wait forever: quorum at the deadline, extensions then failure below it,
// and a rank whose client dies re-placed on a spare client that starts from the global model.

let farm: TrainingFarm | undefined;
afterEach(async () => {
  await farm?.stop();
  farm = undefined;
});

const uni = (x: number) => model([x, x, x, x], [x, x, x, x]);

describe('rounds with missing ranks', () => {
  it('closes a round at its deadline once the quorum is in', async () => {
    farm = await trainingFarm('sqlite', 3);
    const { ts, token, clients, ids } = farm;
    const created = await ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 3,
      config: { rounds: 2, quorum: 2, round_deadline_s: 1 },
    });
    const taskId = created.body.id as number;
    const datas = await Promise.all(clients.map((c) => taskMessage(c, taskId)));
    const t0 = Date.now();
    for (const [i, d] of datas.entries()) {
      if (d.rank === 2) continue;
      const r = await upload({
        base: ts.url,
        token,
        clientId: ids[i]!,
        taskId,
        round: 1,
        rank: d.rank,
        attempt: d.attempt,
        numSamples: 10,
        body: uni(d.rank === 0 ? 2 : 4),
      });
      expect(r.status).toBe(201);
    }
    const starts = await Promise.all(clients.map((c) => c.type('round_start', 10_000)));
    expect(Date.now() - t0).toBeGreaterThan(500);
    expect(starts[0]).toMatchObject({ round: 2 });
    const g = await download(ts.url, starts[0]!.global_model_url as string, token);
    expectClose((await values(g.bytes)).a, [3, 3, 3, 3]);
    const rounds = await ts.api('GET', `/api/tasks/${taskId}/rounds`);
    expect(rounds.body.items[0]).toMatchObject({ round: 1, state: 'closed', num_updates: 2 });
    expect(rounds.body.items[1]).toMatchObject({ round: 2, state: 'open', num_updates: 0 });
    await ts.api('PUT', `/api/tasks/${taskId}/status`, { status: 'cancelled' });
    await Promise.all(clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === taskId)));
  });

  it('re-places the ranks missing at a deadline below quorum, and fails the task in the end', async () => {
    farm = await trainingFarm('sqlite', 2);
    const { ts, clients } = farm;
    const created = await ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 2,
      config: { rounds: 1, round_deadline_s: 0.3 },
    });
    const taskId = created.body.id as number;
    await Promise.all(clients.map((c) => taskMessage(c, taskId)));
    // The late ranks are told to stop and handed out again (their next attempt)...
    await Promise.all(clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === taskId, 10_000)));
    let task = await ts.api('GET', `/api/tasks/${taskId}`);
    for (let i = 0; i < 200 && task.body.status === 'running'; i++) {
      await sleep(50);
      task = await ts.api('GET', `/api/tasks/${taskId}`);
    }
    // ... until the attempts or the extensions run out: no round waits forever.
    expect(task.body.status).toBe('failed');
    expect(task.body.error_log).toMatch(/missed the deadline of round 1|missed its quorum/);
    const events = await ts.api('GET', `/api/tasks/${taskId}/events`);
    const kinds = events.body.items.map((e: { kind: string }) => e.kind);
    expect(kinds).toContain('round_extended');
    expect(kinds).toContain('rank_retry');
  });

  it("stops a paused task's round deadline and resumes it with the time it had left", async () => {
    farm = await trainingFarm('sqlite', 2);
    const { ts, token, clients, ids } = farm;
    const created = await ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 2,
      config: { rounds: 1, round_deadline_s: 1 },
    });
    const taskId = created.body.id as number;
    const datas = await Promise.all(clients.map((c) => taskMessage(c, taskId)));
    expect((await ts.api('PUT', `/api/tasks/${taskId}/status`, { status: 'paused' })).status).toBe(200);
    await sleep(1500);
    let events = (await ts.api('GET', `/api/tasks/${taskId}/events`)).body.items.map(
      (e: { kind: string }) => e.kind,
    );
    expect(events).not.toContain('round_extended');
    expect((await ts.api('PUT', `/api/tasks/${taskId}/status`, { status: 'running' })).status).toBe(200);
    for (const [i, d] of datas.entries()) {
      const r = await upload({
        base: ts.url,
        token,
        clientId: ids[i]!,
        taskId,
        round: 1,
        rank: d.rank,
        attempt: d.attempt,
        numSamples: 1,
        body: uni(i),
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    await Promise.all(clients.map((c) => c.type('training_complete', 10_000)));
    events = (await ts.api('GET', `/api/tasks/${taskId}/events`)).body.items.map(
      (e: { kind: string }) => e.kind,
    );
    expect(events).not.toContain('round_extended');
    expect((await ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });

  it("re-places a dead rank's client; the new client starts from the current global model", async () => {
    farm = await trainingFarm('sqlite', 4, { CONNECTION_TIMEOUT: 1.5 });
    const { ts, token, clients, ids } = farm;
    const created = await ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 3,
      config: { rounds: 2 },
    });
    const taskId = created.body.id as number;
    // Three of the four clients get a rank; the fourth is the spare.
    let assigned: { client_id: string }[] = [];
    while (assigned.length < 3) {
      await sleep(50);
      assigned = (await ts.api('GET', `/api/tasks/${taskId}/assignments`)).body.items;
    }
    const ranks = await Promise.all(
      assigned.map(async (a) => {
        const i = ids.indexOf(a.client_id);
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a task message
        return { i, d: (await taskMessage(clients[i]!, taskId)) as any };
      }),
    );
    const spare = [0, 1, 2, 3].find((i) => !ranks.some((r) => r.i === i))!;
    for (const { i, d } of ranks) {
      const r = await upload({
        base: ts.url,
        token,
        clientId: ids[i]!,
        taskId,
        round: 1,
        rank: d.rank,
        attempt: d.attempt,
        numSamples: 1,
        body: uni(d.rank),
      });
      expect(r.status).toBe(201);
    }
    await Promise.all(ranks.map(({ i }) => clients[i]!.type('round_start', 10_000)));
    // Rank 2's client dies in round 2.
    const dead = ranks.find((r) => r.d.rank === 2)!;
    clients[dead.i]!.close();
    const replaced = await taskMessage(clients[spare]!, taskId);
    expect(replaced).toMatchObject({ rank: 2, attempt: 2 });
    expect(replaced.training).toMatchObject({
      round: 2,
      global_model_url: `/api/tasks/${taskId}/rounds/2/model`,
    });
    const g = await download(ts.url, replaced.training.global_model_url, token);
    expectClose((await values(g.bytes)).a, [1, 1, 1, 1]);
    const round2 = [
      ...ranks
        .filter((r) => r.d.rank !== 2)
        .map(({ i, d }) => ({ id: ids[i]!, rank: d.rank, attempt: d.attempt })),
      { id: ids[spare]!, rank: 2, attempt: replaced.attempt },
    ];
    for (const u of round2) {
      const r = await upload({
        base: ts.url,
        token,
        clientId: u.id,
        taskId,
        round: 2,
        rank: u.rank,
        attempt: u.attempt,
        numSamples: 1,
        body: uni(10 * (u.rank + 1)),
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    await clients[spare]!.type('training_complete', 10_000);
    const final = await download(ts.url, `/api/tasks/${taskId}/model`, token);
    expectClose((await values(final.bytes)).b, [20, 20, 20, 20]);
    expect((await ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });
});
