import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors } from '../src/training/safetensors/encode.js';
import { DIALECTS } from './helpers/db.js';
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

/** A safetensors file written by hand: 8-byte length, the JSON text, `body` zero bytes. */
function raw(header: string, body: number, declared?: number): Buffer {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(declared ?? json.length));
  return Buffer.concat([len, json, Buffer.alloc(body)]);
}
const F32 = (shape: number[], from: number, to: number) =>
  `{"dtype":"F32","shape":${JSON.stringify(shape)},"data_offsets":[${from},${to}]}`;

describe.each(DIALECTS)('update uploads (%s)', (dialect) => {
  let farm: TrainingFarm;
  let taskId: number;
  const lease: { rank: number; attempt: number; id: string }[] = [];

  beforeAll(async () => {
    farm = await trainingFarm(dialect, 2, { MAX_UPLOAD_BYTES: 1024 });
    const created = await farm.ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 2,
      config: { rounds: 1 },
    });
    taskId = created.body.id;
    const datas = await Promise.all(farm.clients.map((c) => taskMessage(c, taskId)));
    datas.forEach((d, i) => (lease[d.rank] = { rank: d.rank, attempt: d.attempt, id: farm.ids[i]! }));
  });
  afterAll(async () => farm?.stop());

  const put = (rank: number, body: Uint8Array, over: Partial<Parameters<typeof upload>[0]> = {}) =>
    upload({
      base: farm.ts.url,
      token: farm.token,
      clientId: lease[rank]!.id,
      taskId,
      round: 1,
      rank,
      attempt: lease[rank]!.attempt,
      numSamples: 100,
      body,
      ...over,
    });

  it('checks every upload and counts a retried one once', async () => {
    // Rank 0's update is the round's first: it fixes names, dtypes and shapes.
    const first = await put(0, model([1, 1, 1, 1], [1, 1, 1, 1]));
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    // A retry after a lost answer: acknowledged, not counted again.
    const again = await put(0, model([1, 1, 1, 1], [1, 1, 1, 1]));
    expect(again).toMatchObject({ status: 200, body: { duplicate: true, digest: first.body.digest } });

    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- error bodies
    const refusals: [string, () => Promise<{ status: number; body: any }>, number, string][] = [
      ['bad header', () => put(1, raw('{not json', 16)), 400, 'invalid_json'],
      ['header larger than the file', () => put(1, raw('{}', 0, 10_000)), 400, 'header_exceeds_file'],
      [
        'overlapping offsets',
        () => put(1, raw(`{"a":${F32([4], 0, 16)},"b":${F32([2, 2], 8, 24)}}`, 24)),
        400,
        'overlap',
      ],
      [
        'offsets out of range',
        () => put(1, raw(`{"a":${F32([4], 0, 16)},"b":${F32([2, 2], 16, 40)}}`, 32)),
        400,
        'offsets_out_of_bounds',
      ],
      [
        'duplicate names',
        () => put(1, raw(`{"a":${F32([4], 0, 16)},"a":${F32([4], 16, 32)}}`, 32)),
        400,
        'duplicate_tensor',
      ],
      ['wrong dtype', () => put(1, model([1, 1, 1, 1], [1, 1, 1, 1], 'F16')), 400, 'dtype_mismatch'],
      [
        'wrong shape',
        () =>
          put(
            1,
            encodeSafetensors([
              { name: 'a', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
              { name: 'b', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
            ]),
          ),
        400,
        'shape_mismatch',
      ],
      [
        'missing tensor',
        () => put(1, encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [4], data: new Float32Array(4) }])),
        400,
        'missing_tensor',
      ],
      [
        'integer dtype',
        () => put(1, encodeSafetensors([{ name: 'a', dtype: 'I32', shape: [4], data: new Uint8Array(16) }])),
        400,
        'unsupported_dtype',
      ],
      ['NaN', () => put(1, model([1, NaN, 1, 1], [1, 1, 1, 1])), 400, 'non_finite'],
      ['Inf', () => put(1, model([1, 1, 1, 1], [1, 1, -Infinity, 1])), 400, 'non_finite'],
      [
        'oversize',
        () =>
          put(1, encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [300], data: new Float32Array(300) }])),
        413,
        'too_large',
      ],
      [
        'stale attempt',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { attempt: lease[1]!.attempt + 1 }),
        409,
        'stale_attempt',
      ],
      // Rank 0's client has no lease on rank 1.
      [
        'wrong client',
        () => put(1, model([3, 3, 3, 3], [3, 3, 3, 3]), { clientId: lease[0]!.id }),
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
    const put = await upload({
      base: ts.url,
      token: user,
      clientId: lease[0]!.id,
      taskId,
      round: 1,
      rank: 0,
      attempt: 1,
      numSamples: 1,
      body: model([1, 1, 1, 1], [1, 1, 1, 1]),
    });
    expect(put.status).toBe(403);
    await ts.api('DELETE', `/api/tasks/${mine.body.id}`);
  });

  it('refuses a bad header before the body is read', async () => {
    const created = await farm.ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 2,
      config: { rounds: 1 },
    });
    const id = created.body.id as number;
    const datas = await Promise.all(farm.clients.map((c) => taskMessage(c, id)));
    const d = datas[0];
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
      req.write(raw('{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}', 0));
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).error.code).toBe('unknown_dtype');
    await farm.ts.api('PUT', `/api/tasks/${id}/status`, { status: 'cancelled' });
    await Promise.all(farm.clients.map((c) => c.next((m) => m.type === 'stop' && m.task_id === id)));
  });
});
