import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { model, values } from './helpers/safetensors.js';
import { download, expectClose, farmPerTest, startTraining } from './helpers/training.js';
import { waitFor } from './helpers/wait.js';

const trainingFarm = farmPerTest();

describe.each(DIALECTS)('FedAvg training end to end (%s)', (dialect) => {
  it('runs two rounds of three ranks, averages by samples, checkpoints and completes', async () => {
    const farm = await trainingFarm(dialect, 3, { CHECKPOINT_FREQUENCY: 1 });
    const { ts, token, clients } = farm;
    const t = await startTraining(farm, { rounds: 2, aggregation: { strategy: 'fedavg' }, lr: 0.1 });
    const { taskId } = t;
    expect(t.created.config).toMatchObject({ epochs: 10, batch_size: 32, quorum: 3, shards: 'even' });

    for (const { message: d } of t.ranks) {
      expect(d.training).toMatchObject({ round: 1, rounds: 2, global_model_url: null });
      expect(d.training.upload_url).toBe(
        `/api/tasks/${taskId}/rounds/1/updates/${d.rank}?attempt=${d.attempt}`,
      );
    }
    // Round 1: rank r sends a = [r+1, ...], b = [10(r+1), ...] with (r+1)*100 samples.
    const samples = [100, 200, 300];
    const r1 = (r: number) => model([r + 1, r + 1, r + 1, r + 1], [10 * (r + 1), 0, 0, -(r + 1)]);
    for (const { rank } of t.ranks) {
      const res = await t.put(rank, r1(rank), {
        numSamples: samples[rank]!,
        metrics: { loss: rank + 1, accuracy: 0.5 },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.accepted).toBe(true);
    }
    // Weighted mean: (1*100 + 2*200 + 3*300) / 600 = 1400/600.
    const mean1 = 1400 / 600;
    const starts = await Promise.all(clients.map((c) => c.type('round_start', 20_000)));
    for (const s of starts) expect(s).toMatchObject({ task_id: taskId, round: 2, rounds: 2 });
    const url = starts[0]!.global_model_url as string;
    expect(url).toBe(`/api/tasks/${taskId}/rounds/2/model`);
    const g = await download(ts.url, url, token);
    expect(g.status).toBe(200);
    const etag = g.headers.get('etag');
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    const v = await values(g.bytes);
    expectClose(v.a, [mean1, mean1, mean1, mean1]);
    expectClose(v.b, [10 * mean1, 0, 0, -mean1]);
    // The same model from the model server, with a Range and an If-None-Match.
    const part = await download(ts.server.modelUrl, `/tasks/${taskId}/rounds/2/model`, token, {
      range: 'bytes=0-7',
    });
    expect(part.status).toBe(206);
    expect(part.bytes.equals(g.bytes.subarray(0, 8))).toBe(true);
    expect(part.headers.get('content-range')).toBe(`bytes 0-7/${g.bytes.length}`);
    const same = await download(ts.url, url, token, { 'if-none-match': etag! });
    expect(same.status).toBe(304);

    // Round 2: every rank sends its round-1 update doubled, equal samples.
    for (const { rank } of t.ranks) {
      const res = await t.put(rank, model([2 * (rank + 1), 0, 0, 0], [0, 0, 0, rank]), {
        round: 2,
        numSamples: 50,
        metrics: { loss: 1 },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    const done = await Promise.all(clients.map((c) => c.type('training_complete', 20_000)));
    expect(done[0]).toMatchObject({ task_id: taskId, rounds: 2, model_url: `/api/tasks/${taskId}/model` });
    const task = await ts.api('GET', `/api/tasks/${taskId}`);
    expect(task.body.status).toBe('completed');
    expect(task.body.result).toMatchObject({ rounds: 2, model_digest: done[0]!.model_digest });
    expect(task.body.checkpoint_path).toBe(task.body.result.model_path);
    const final = await download(ts.url, `/api/tasks/${taskId}/model`, token);
    expect(final.status).toBe(200);
    const fv = await values(final.bytes);
    expectClose(fv.a, [4, 0, 0, 0]);
    expectClose(fv.b, [0, 0, 0, 1]);
    // A late task_result is a duplicate.
    const c0 = t.ranks[0]!.client;
    const d0 = t.ranks[0]!.message;
    c0.send({
      type: 'task_result',
      msg_id: 'late',
      task_id: taskId,
      status: 'completed',
      attempt: d0.attempt,
    });
    const ack = await c0.next((m) => m.reply_to === 'late');
    expect(ack).toMatchObject({ type: 'ack', duplicate: true });

    const rounds = await ts.api('GET', `/api/tasks/${taskId}/rounds`);
    expect(rounds.body.items).toHaveLength(2);
    expect(rounds.body.items[0]).toMatchObject({ round: 1, state: 'closed', num_updates: 3 });
    expect(rounds.body.items[0].metrics.loss).toBeCloseTo(1400 / 600, 6);
    // Who trained in each round: every rank's client, in acceptance order (rank order here).
    const trainedBy = (items: { trained: { rank: number; client_id: string; attempt: number }[] }[]) =>
      items.map((r) => r.trained.map((u) => `${u.rank}:${u.client_id}:${u.attempt}`));
    const expected = t.ranks.map((r) => `${r.rank}:${r.clientId}:${r.attempt}`).sort();
    expect(trainedBy(rounds.body.items)).toEqual([expected, expected]);
    const metrics = await ts.api('GET', `/api/tasks/${taskId}/metrics`);
    expect(metrics.body.rounds).toHaveLength(2);
    expect(trainedBy(metrics.body.rounds)).toEqual([expected, expected]);
    const assignments = await ts.api('GET', `/api/tasks/${taskId}/assignments`);
    for (const a of assignments.body.items) {
      expect(a.status).toBe('completed');
      expect(a.checkpoint_path).toBeTruthy();
    }
    // Deleting the task deletes its models and checkpoints.
    const checkpoint = task.body.checkpoint_path as string;
    expect(existsSync(checkpoint)).toBe(true);
    expect((await ts.api('DELETE', `/api/tasks/${taskId}`)).status).toBe(204);
    await waitFor('the checkpoint deleted', () => !existsSync(checkpoint), 2000, { everyMs: 20 });
  });
});
