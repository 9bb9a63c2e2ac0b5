import { describe, expect, it } from 'vitest';
import { model, values } from './helpers/safetensors.js';
import {
  download,
  expectClose,
  farmPerTest,
  startTraining,
  taskMessage,
  type TrainingFarm,
} from './helpers/training.js';
import { sleep, waitFor } from './helpers/wait.js';

// Rounds that do not wait forever: quorum at the deadline, extensions then failure below it,
// and a rank whose client dies re-placed on a spare client that starts from the global model.

const trainingFarm = farmPerTest();
const uni = (x: number) => model([x, x, x, x], [x, x, x, x]);

describe('rounds with missing ranks', () => {
  it('closes a round at its deadline once the quorum is in', async () => {
    const farm = await trainingFarm('sqlite', 3);
    const { ts, token, clients } = farm;
    const t = await startTraining(farm, { rounds: 2, quorum: 2, round_deadline_s: 1 });
    const t0 = Date.now();
    for (const r of [0, 1]) {
      const res = await t.put(r, uni(r === 0 ? 2 : 4), { numSamples: 10 });
      expect(res.status).toBe(201);
    }
    const starts = await Promise.all(clients.map((c) => c.type('round_start', 10_000)));
    expect(Date.now() - t0).toBeGreaterThan(500);
    expect(starts[0]).toMatchObject({ round: 2 });
    const g = await download(ts.url, starts[0]!.global_model_url as string, token);
    expectClose((await values(g.bytes)).a, [3, 3, 3, 3]);
    const rounds = await ts.api('GET', `/api/tasks/${t.taskId}/rounds`);
    expect(rounds.body.items[0]).toMatchObject({ round: 1, state: 'closed', num_updates: 2 });
    expect(rounds.body.items[1]).toMatchObject({ round: 2, state: 'open', num_updates: 0 });
    await ts.api('PUT', `/api/tasks/${t.taskId}/status`, { status: 'cancelled' });
    await Promise.all(clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === t.taskId)));
  });

  it('re-places the ranks missing at a deadline below quorum, and fails the task in the end', async () => {
    const farm = await trainingFarm('sqlite', 2);
    const { ts, clients } = farm;
    const { taskId } = await startTraining(farm, { rounds: 1, round_deadline_s: 0.3 });
    // The late ranks are told to stop and handed out again (their next attempt)...
    await Promise.all(clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === taskId, 10_000)));
    // ... until the attempts or the extensions run out: no round waits forever.
    const task = await waitFor(
      'the task to end',
      async () => {
        const body = (await ts.api('GET', `/api/tasks/${taskId}`)).body;
        return body.status !== 'running' && body;
      },
      10_000,
      { everyMs: 50 },
    );
    expect(task.status).toBe('failed');
    expect(task.error_log).toMatch(/missed the deadline of round 1|missed its quorum/);
    const kinds = await eventKinds(farm, taskId);
    expect(kinds).toContain('round_extended');
    expect(kinds).toContain('rank_retry');
  });

  it("stops a paused task's round deadline and resumes it with the time it had left", async () => {
    const farm = await trainingFarm('sqlite', 2);
    const { ts, clients } = farm;
    const t = await startTraining(farm, { rounds: 1, round_deadline_s: 1 });
    const status = (s: string) => ts.api('PUT', `/api/tasks/${t.taskId}/status`, { status: s });
    expect((await status('paused')).status).toBe(200);
    await sleep(1500);
    expect(await eventKinds(farm, t.taskId)).not.toContain('round_extended');
    expect((await status('running')).status).toBe(200);
    for (const [i, r] of t.ranks.entries()) {
      const res = await t.put(r.rank, uni(i));
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    await Promise.all(clients.map((c) => c.type('training_complete', 10_000)));
    expect(await eventKinds(farm, t.taskId)).not.toContain('round_extended');
    expect((await ts.api('GET', `/api/tasks/${t.taskId}`)).body.status).toBe('completed');
  });

  it("re-places a dead rank's client; the new client starts from the current global model", async () => {
    const farm = await trainingFarm('sqlite', 4, { CONNECTION_TIMEOUT: 1.5 });
    const { ts, token, clients, ids } = farm;
    // Three of the four clients get a rank; the fourth is the spare.
    const t = await startTraining(farm, { rounds: 2 }, { worldSize: 3 });
    const { taskId } = t;
    const spare = clients.find((c) => !t.ranks.some((r) => r.client === c))!;
    for (const r of t.ranks) expect((await t.put(r.rank, uni(r.rank))).status).toBe(201);
    await Promise.all(t.ranks.map((r) => r.client.type('round_start', 10_000)));
    // Rank 2's client dies in round 2.
    t.rank(2).client.close();
    const replaced = await taskMessage(spare, taskId);
    expect(replaced).toMatchObject({ rank: 2, attempt: 2 });
    expect(replaced.training).toMatchObject({
      round: 2,
      global_model_url: `/api/tasks/${taskId}/rounds/2/model`,
    });
    const g = await download(ts.url, replaced.training.global_model_url, token);
    expectClose((await values(g.bytes)).a, [1, 1, 1, 1]);
    const spareLease = { clientId: ids[clients.indexOf(spare)]!, attempt: replaced.attempt as number };
    for (const rank of [0, 1, 2]) {
      const res = await t.put(rank, uni(10 * (rank + 1)), { round: 2, ...(rank === 2 ? spareLease : {}) });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    await spare.type('training_complete', 10_000);
    const final = await download(ts.url, `/api/tasks/${taskId}/model`, token);
    expectClose((await values(final.bytes)).b, [20, 20, 20, 20]);
    expect((await ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });

  it('re-places a rank lost while its task is paused when the task resumes', async () => {
    const farm = await trainingFarm('sqlite', 3, { CONNECTION_TIMEOUT: 1.5 });
    const { ts, clients, ids } = farm;
    const t = await startTraining(farm, { rounds: 1 }, { worldSize: 2 });
    const { taskId } = t;
    const spare = clients.find((c) => !t.ranks.some((r) => r.client === c))!;
    const status = (s: string) => ts.api('PUT', `/api/tasks/${taskId}/status`, { status: s });
    expect((await status('paused')).status).toBe(200);
    // Rank 1's client dies while the task is paused: the task waits, paused, for its resume.
    t.rank(1).client.close();
    const retry = await waitFor(
      'the rank_retry event',
      async () => {
        const events = (await ts.api('GET', `/api/tasks/${taskId}/events`)).body.items;
        return events.find((e: { kind: string }) => e.kind === 'rank_retry');
      },
      10_000,
      { everyMs: 50 },
    );
    expect(retry.message).toMatch(/re-placing rank 1 when the task resumes/);
    expect((await ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('paused');
    expect((await status('running')).status).toBe(200);
    const replaced = await taskMessage(spare, taskId);
    expect(replaced).toMatchObject({ rank: 1, attempt: 2 });
    const spareLease = { clientId: ids[clients.indexOf(spare)]!, attempt: replaced.attempt as number };
    expect((await t.put(0, uni(2))).status).toBe(201);
    const res = await t.put(1, uni(4), spareLease);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    await spare.type('training_complete', 10_000);
    expect((await ts.api('GET', `/api/tasks/${taskId}`)).body.status).toBe('completed');
  });
});

/** The kinds of a task's events, oldest first. */
async function eventKinds(farm: TrainingFarm, taskId: number): Promise<string[]> {
  const events = await farm.ts.api('GET', `/api/tasks/${taskId}/events`);
  return events.body.items.map((e: { kind: string }) => e.kind);
}
