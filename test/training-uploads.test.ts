import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { malformedUpdates, model, rawSafetensors, values } from './helpers/safetensors.js';
import {
  download,
  expectClose,
  startTraining,
  trainingFarm,
  type Training,
  type TrainingFarm,
} from './helpers/training.js';

describe.each(DIALECTS)('update uploads (%s)', (dialect) => {
  let farm: TrainingFarm;
  let t: Training;
  let taskId: number;

  beforeAll(async () => {
    farm = await trainingFarm(dialect, 2, { MAX_UPLOAD_BYTES: 1024 });
    t = await startTraining(farm, { rounds: 1 });
    taskId = t.taskId;
  });
  afterAll(async () => farm?.stop());

  const put: Training['put'] = (rank, body, over = {}) => t.put(rank, body, { numSamples: 100, ...over });

  it('checks every upload and counts a retried one once', async () => {
    // Rank 0's update is the round's first: it fixes names, dtypes and shapes.
    const first = await put(0, model([1, 1, 1, 1], [1, 1, 1, 1]));
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    // A retry after a lost answer: acknowledged, not counted again.
    const again = await put(0, model([1, 1, 1, 1], [1, 1, 1, 1]));
    expect(again).toMatchObject({ status: 200, body: { duplicate: true, digest: first.body.digest } });

    type Refusal = [string, () => ReturnType<typeof put>, number, string];
    const refusals: Refusal[] = [
      ...malformedUpdates().map(({ what, body, status, code }): Refusal => [
        what,
        () => put(1, body),
        status,
        code,
      ]),
      [
        'stale attempt',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { attempt: t.rank(1).attempt + 1 }),
        409,
        'stale_attempt',
      ],
      // Rank 0's client has no lease on rank 1.
      [
        'wrong client',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { clientId: t.rank(0).clientId }),
        409,
        'stale_attempt',
      ],
      [
        'unknown client',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { clientId: 'nobody' }),
        409,
        'client_not_connected',
      ],
      // A client of the worker token, but an upload made with the admin token.
      [
        "another token's client",
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { token: farm.ts.adminToken }),
        403,
        'forbidden',
      ],
      ['round not open', () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { round: 2 }), 409, 'round_closed'],
      [
        'no client header',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { headers: { 'x-ai-farm-client': '' } }),
        400,
        'missing_client',
      ],
      [
        'bad metrics',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { headers: { 'x-ai-farm-metrics': '[1' } }),
        400,
        'invalid_metrics',
      ],
    ];
    for (const [what, p, status, code] of refusals) {
      const r = await p();
      expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBe(status);
      expect(r.body.error.code, what).toBe(code);
    }
    const current = await farm.ts.api('GET', `/api/tasks/${taskId}/rounds/current`);
    expect(current.body).toMatchObject({ round: 1, state: 'open', accepted_ranks: [0], num_updates: 1 });
    const listed = await farm.ts.api('GET', `/api/tasks/${taskId}/rounds`);
    expect(listed.body.items).toMatchObject([{ round: 1, state: 'open', num_updates: 1 }]);
    expect(listed.body.items[0].trained).toMatchObject([
      { rank: 0, client_id: t.rank(0).clientId, attempt: t.rank(0).attempt },
    ]);
    expect(current.body.trained).toEqual(listed.body.items[0].trained);

    const second = await put(1, model([3, 3, 3, 3], [5, 5, 5, 5]));
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    await Promise.all(farm.clients.map((c) => c.type('training_complete', 20_000)));
    // Counted once each: (1 + 3) / 2 and (1 + 5) / 2; rank 0 twice would give 5/3 and 7/3.
    const final = await download(farm.ts.url, `/api/tasks/${taskId}/model`, farm.token);
    const v = await values(final.bytes);
    expectClose(v.a, [2, 2, 2, 2]);
    expectClose(v.b, [3, 3, 3, 3]);
    const rounds = await farm.ts.api('GET', `/api/tasks/${taskId}/rounds`);
    expect(rounds.body.items[0]).toMatchObject({ state: 'closed', num_updates: 2 });
  });

  it('lets only the task owner, admins and the workers holding it read its rounds and models', async () => {
    const { ts } = farm;
    const user = (await ts.api('POST', '/api/tokens', { name: `u-${dialect}`, role: 'user' })).body.token;
    const otherWorker = (await ts.api('POST', '/api/tokens', { name: `ow-${dialect}`, role: 'worker' })).body
      .token;
    for (const path of [`/api/tasks/${taskId}/model`, `/api/tasks/${taskId}/rounds`]) {
      expect((await ts.api('GET', path, undefined, farm.token)).status, path).toBe(200);
      expect((await ts.api('GET', path, undefined, user)).status, path).toBe(404);
      expect((await ts.api('GET', path, undefined, otherWorker)).status, path).toBe(404);
      expect((await ts.api('GET', path, undefined, null)).status, path).toBe(401);
    }
    const onModelServer = await fetch(`${ts.server.modelUrl}/tasks/${taskId}/model`, {
      headers: { authorization: `Bearer ${otherWorker}` },
    });
    expect(onModelServer.status).toBe(404);
    expect((await fetch(`${ts.server.modelUrl}/tasks/${taskId}/model`)).status).toBe(401);
    // A user's own training task is theirs to read.
    const mine = await ts.api(
      'POST',
      '/api/tasks',
      { type: 'command', requirements: { min_ram_gb: 1e6 }, config: { rounds: 1 } },
      user,
    );
    expect(mine.status).toBe(201);
    expect((await ts.api('GET', `/api/tasks/${mine.body.id}/rounds`, undefined, user)).body).toEqual({
      items: [],
    });
    // A user may not upload.
    const put = await t.put(0, model([1, 1, 1, 1], [1, 1, 1, 1]), { token: user, attempt: 1 });
    expect(put.status).toBe(403);
    await ts.api('DELETE', `/api/tasks/${mine.body.id}`);
  });

  it('refuses a bad header before the body is read', async () => {
    const { taskId: id, ranks } = await startTraining(farm, { rounds: 1 });
    const d = ranks[0]!.message;
    const url = new URL(
      `${farm.ts.url}/api/tasks/${id}/rounds/1/updates/${d.rank}?attempt=${d.attempt}&num_samples=1`,
    );
    // Declares a 1000-byte body but sends only the (bad) header, then waits: the answer must
    // come without the rest.
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(
        url,
        {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${farm.token}`,
            'content-type': 'application/octet-stream',
            'content-length': '1000',
            'x-ai-farm-client': farm.ids[0]!,
          },
        },
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            resolve({ status: res.statusCode ?? 0, body });
            req.destroy();
          });
        },
      );
      req.on('error', reject);
      req.write(rawSafetensors('{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}', 0));
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).error.code).toBe('unknown_dtype');
    await farm.ts.api('PUT', `/api/tasks/${id}/status`, { status: 'cancelled' });
    await Promise.all(farm.clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === id)));
  });
});
