import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CliProcess } from './clients/processes.js';
import { DIALECTS } from './helpers/db.js';
import { model, values } from './helpers/safetensors.js';
import {
  ENDED,
  download,
  expectClose,
  farmPerTest,
  mnistTaskBody,
  startTraining,
  workerArgs,
} from './helpers/training.js';
import { startTestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';

const trainingFarm = farmPerTest();

type Event = { kind: string; data: Record<string, unknown> | null };

/** Over-selection (config.over_select, issue 14 point 3) through the real HTTP upload path. */
describe.each(DIALECTS)('over-selection (%s)', (dialect) => {
  it('closes a round on its first K updates, refuses and counts the late one, and completes', async () => {
    const farm = await trainingFarm(dialect, 3);
    const { ts, token } = farm;
    // W = 3 ranks, one extra: K = 2 updates close each round.
    const t = await startTraining(farm, { rounds: 2, over_select: 1 });
    const { taskId } = t;
    expect(t.created.config).toMatchObject({ over_select: 1, quorum: 2 });

    // Round 1: ranks 0 and 1 (100 and 300 samples); rank 2 holds its update back.
    const first = [
      { rank: 0, n: 100, m: model([1, 1, 1, 1], [2, 0, 0, -1]) },
      { rank: 1, n: 300, m: model([5, 5, 5, 5], [6, 0, 0, 3]) },
    ];
    for (const { rank, n, m } of first) {
      const res = await t.put(rank, m, { numSamples: n, metrics: { loss: rank + 1 } });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    // The round closed on those two, without waiting for rank 2 or the deadline (600 s):
    // every rank, rank 2 included, is told round 2.
    const starts = await Promise.all(
      t.ranks.map((r) => r.client.next((x) => x.type === 'round_start' && x.round === 2, 20_000)),
    );
    expect(starts.map((s) => s.rank).sort()).toEqual([0, 1, 2]);
    // Rank 2's update for round 1 arrives late: refused, and counted.
    const late = await t.put(2, model([100, 100, 100, 100], [100, 100, 100, 100]), { numSamples: 1000 });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('round_closed');

    // The global model of round 2 is the weighted mean of exactly the first two updates:
    // a = (1*100 + 5*300) / 400 = 4, b = [(2*100 + 6*300)/400, 0, 0, (-100 + 900)/400] = [5, 0, 0, 2].
    const g = await download(ts.url, `/api/tasks/${taskId}/rounds/2/model`, token);
    expect(g.status).toBe(200);
    const v = await values(g.bytes);
    expectClose(v.a, [4, 4, 4, 4]);
    expectClose(v.b, [5, 0, 0, 2]);

    const rounds = (await ts.api('GET', `/api/tasks/${taskId}/rounds`)).body.items;
    expect(rounds[0]).toMatchObject({ round: 1, state: 'closed', num_updates: 2 });
    expect(rounds[0].metrics.refused_late).toBe(1);
    expect(rounds[0].metrics.loss).toBeCloseTo((1 * 100 + 2 * 300) / 400, 6);
    expect(rounds[1]).toMatchObject({ round: 2, state: 'open' });
    const events = (await ts.api('GET', `/api/tasks/${taskId}/events?limit=100`)).body.items as Event[];
    const lateEvents = events.filter((e) => e.kind === 'update_late');
    expect(lateEvents).toHaveLength(1);
    expect(lateEvents[0]!.data).toEqual({ round: 1, rank: 2, client_id: t.rank(2).clientId });
    // The late rank was not released: it still holds its rank and trains round 2.
    const assignments = (await ts.api('GET', `/api/tasks/${taskId}/assignments`)).body.items as {
      rank: number;
      status: string;
    }[];
    expect(assignments.filter((a) => a.status === 'lost' || a.status === 'failed')).toEqual([]);
    expect(assignments).toHaveLength(3);

    // Round 2: the late rank is among the first two this time.
    for (const rank of [2, 0]) {
      const res = await t.put(rank, model([rank, 0, 0, 0], [0, 0, 0, 1]), { round: 2, numSamples: 10 });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    await Promise.all(t.ranks.map((r) => r.client.type('training_complete', 20_000)));
    // After the last round the task is complete: the late rank's upload has no lease left.
    const afterEnd = await t.put(1, model([9, 9, 9, 9], [9, 9, 9, 9]), { round: 2, numSamples: 10 });
    expect(afterEnd.status).toBe(409);
    expect(afterEnd.body.error.code).toBe('stale_attempt');
    const task = (await ts.api('GET', `/api/tasks/${taskId}`)).body;
    expect(task.status).toBe('completed');
    const final = await values((await download(ts.url, `/api/tasks/${taskId}/model`, token)).bytes);
    expectClose(final.a, [1, 0, 0, 0]);
    const all = (await ts.api('GET', `/api/tasks/${taskId}/rounds`)).body.items;
    expect(all.map((r: { num_updates: number }) => r.num_updates)).toEqual([2, 2]);
    expect(all[1].metrics.refused_late).toBe(0);
  });

  it('refuses configs that cannot over-select, naming why', async () => {
    const farm = await trainingFarm(dialect, 1);
    const post = (worldSize: number, config: Record<string, unknown>) =>
      farm.ts.api('POST', '/api/tasks', { type: 'command', requirements: {}, world_size: worldSize, config });
    const refused = async (
      worldSize: number,
      config: Record<string, unknown>,
      field: string,
      why: RegExp,
    ) => {
      const res = await post(worldSize, { rounds: 1, ...config });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error.details.fields).toEqual([`body/config/${field}`]);
      expect(res.body.error.message).toMatch(why);
    };
    await refused(3, { mode: 'async', over_select: 1 }, 'over_select', /only with mode "sync".*buffer_size/);
    await refused(3, { over_select: 1.5 }, 'over_select', /integer >= 1.*or a fraction/);
    await refused(2, { over_select: 2 }, 'over_select', /leaves no update to close a round/);
    await refused(1, { over_select: 0.5 }, 'over_select', /leaves no update/);
    await refused(3, { over_select: 0 }, 'over_select', /must be > 0/);
    await refused(3, { over_select: 1, quorum: 3 }, 'quorum', /at most the 2 updates that close a round/);
    // A fraction: K + ceil(x K) <= W, the rest extra. W = 4, x = 0.5: K = 2 (2 + 1 <= 4 < 3 + 2).
    const ok = await post(4, { rounds: 1, over_select: 0.5 });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.config).toMatchObject({ over_select: 0.5, quorum: 2 });
    await farm.ts.api('PUT', `/api/tasks/${ok.body.id}/status`, { status: 'cancelled' });
  });
});

describe('over-selection with real workers', () => {
  it('a straggling worker abandons each round the first two close without it, and the task completes', async () => {
    const ts = await startTestServer('sqlite');
    const dir = mkdtempSync(join(tmpdir(), 'aifarm-overselect-'));
    const procs: CliProcess[] = [];
    try {
      const tok = await ts.api('POST', '/api/tokens', { name: 'overselect', role: 'worker' });
      const start = async (name: string, more: string[] = []) => {
        const proc = new CliProcess(workerArgs(ts.url, dir, name, more), {
          AI_FARM_TOKEN: tok.body.token as string,
          TMPDIR: dir,
        });
        procs.push(proc);
        await proc.waitFor(/registered as/);
        return proc;
      };
      // One worker 1000 times slower than its training: it never finishes a round before the
      // other two (it waits 999 times its own training time after training).
      const slow = await start('os-slow', ['--slowdown', '1000']);
      await start('os-fast-1');
      await start('os-fast-2');
      const res = await ts.api(
        'POST',
        '/api/tasks',
        mnistTaskBody('overselect', 3, {
          rounds: 3,
          epochs: 1,
          over_select: 1,
          shards: [
            [0, 0.05],
            [0.05, 0.1],
            [0.1, 0.15],
          ],
        }),
      );
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      const id = res.body.id as number;
      const done = await waitFor(
        'the task to end',
        async () => {
          const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
          return ENDED.includes(t.status) && t;
        },
        120_000,
        { state: async () => procs.map((p) => p.output).join('\n----\n') },
      );
      expect(done.status, done.error_log ?? '').toBe('completed');
      const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items;
      expect(rounds.map((r: { num_updates: number }) => r.num_updates)).toEqual([2, 2, 2]);
      // The straggler dropped rounds 1 and 2 when the next one started, and round 3 at the end.
      await slow.waitFor(new RegExp(`\\[task ${id}\\] round 1 abandoned: round 2 started`), 10_000);
      await slow.waitFor(new RegExp(`\\[task ${id}\\] round 2 abandoned: round 3 started`), 10_000);
      await slow.waitFor(new RegExp(`\\[task ${id}\\] round 3 abandoned: training complete`), 10_000);
      await slow.waitFor(new RegExp(`task ${id}: completed`), 30_000);
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
      await ts.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
