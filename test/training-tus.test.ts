/**
 * Resumable uploads (tus 1.0) on a rank's update URL: a real third-party tus client
 * (tus-js-client) through a proxy that cuts its connections at random offsets, the protocol's
 * refusals by hand (wrong offset 409, checksum mismatch 460, expired 410), and a server
 * restart between two PATCH requests. Every upload's digest is checked against an
 * independent computation of the file's digest.
 */
import { createHash, randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import * as tus from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken } from '../src/auth/token-service.js';
import { startServer, type RunningServer } from '../src/main.js';
import { encodeSafetensors } from '../src/training/safetensors/encode.js';
import { downloadModel, uploadUpdate } from '../src/worker/executors/model-transfer.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/db.js';
import { fileDigest } from './helpers/digest.js';
import { request, testConfig } from './helpers/server.js';
import { taskMessage } from './helpers/training.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';
import { sleep } from './helpers/wait.js';

/** A 36 MB F32 update: past the 32 MiB threshold of the check thread, nine digest pieces. */
const ELEMENTS = 9_000_000;
function update(seed: number): Buffer {
  const w = new Float32Array(ELEMENTS);
  for (let i = 0; i < w.length; i++) w[i] = ((i * 7 + seed) % 1000) / 1000;
  return encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [ELEMENTS], data: w }]);
}

/**
 * A TCP proxy in front of the server that cuts each connection after the number of bytes
 * (client to server, or server to client with `down`) the next entry of `cuts` says; counts
 * every byte it forwards that way.
 */
async function cuttingProxy(port: () => number, cuts: number[], down = false, cumulative = false) {
  const sockets = new Set<Socket>();
  let forwarded = 0;
  // Cumulative: the cuts are offsets in everything forwarded, in order, whichever connection
  // carries those bytes (a creation POST or a HEAD on a connection of its own takes no cut).
  if (cumulative) cuts.sort((a, b) => a - b);
  const server: Server = createServer((client) => {
    const limit = cumulative ? Infinity : (cuts.shift() ?? Infinity);
    let sent = 0;
    const upstream = createConnection({ host: '127.0.0.1', port: port() });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    const [from, to] = down ? [upstream, client] : [client, upstream];
    from.on('data', (d: Buffer) => {
      if (cumulative && cuts.length > 0 && forwarded + d.length >= (cuts[0] as number)) {
        const part = d.subarray(0, (cuts.shift() as number) - forwarded);
        forwarded += part.length;
        to.write(part);
        client.destroy();
        upstream.destroy();
        return;
      }
      const room = limit - sent;
      const part = d.length > room ? d.subarray(0, room) : d;
      sent += part.length;
      forwarded += part.length;
      to.write(part);
      if (sent >= limit) {
        client.destroy();
        upstream.destroy();
      }
    });
    to.on('data', (d: Buffer) => from.write(d));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    forwarded: () => forwarded,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe.each(DIALECTS)('resumable (tus) uploads (%s)', (dialect) => {
  let db: TestDatabase;
  let server: RunningServer;
  const adminToken = generateToken();
  let token: string;
  /** A request with the admin token. */
  const asAdmin = (method: string, path: string, body?: unknown) =>
    request(server.httpUrl, method, path, body, adminToken);
  let taskId: number;
  const ids = ['t0', 't1', 't2'].map((p) => `${p}-${Math.random().toString(36).slice(2, 8)}`);
  let clients: RawClient[] = [];
  const lease: { attempt: number; id: string }[] = [];

  const start = async (over: Record<string, unknown> = {}) => {
    server = await startServer(testConfig(db, { ADMIN_TOKEN: adminToken, ...over }));
  };
  const connect = async () => {
    clients = [];
    for (const id of ids) clients.push(await registeredClient(server.wsUrl, token, id, { max_tasks: 1 }));
  };
  const restart = async (over: Record<string, unknown> = {}) => {
    for (const c of clients) c.close();
    await server.stop();
    await start(over);
    await connect();
    // Each client is sent its task again: the lease survived the restart.
    await Promise.all(clients.map((c) => taskMessage(c, taskId)));
  };
  const updateUrl = (rank: number) =>
    `/api/tasks/${taskId}/rounds/1/updates/${rank}?attempt=${lease[rank]!.attempt}&num_samples=10`;
  const tusHeaders = (rank: number, more: Record<string, string> = {}) => ({
    authorization: `Bearer ${token}`,
    'tus-resumable': '1.0.0',
    'x-ai-farm-client': lease[rank]!.id,
    ...more,
  });
  const create = async (rank: number, length: number) => {
    const res = await fetch(server.httpUrl + updateUrl(rank), {
      method: 'POST',
      headers: tusHeaders(rank, { 'upload-length': String(length) }),
    });
    expect(res.status, await res.clone().text()).toBe(201);
    expect(res.headers.get('tus-resumable')).toBe('1.0.0');
    return res.headers.get('location')!;
  };
  const head = (location: string, rank: number) =>
    fetch(server.httpUrl + location, { method: 'HEAD', headers: tusHeaders(rank) });
  const patch = (
    location: string,
    rank: number,
    offset: number,
    body: Uint8Array,
    more: Record<string, string> = {},
  ) =>
    fetch(server.httpUrl + location, {
      method: 'PATCH',
      headers: tusHeaders(rank, {
        'content-type': 'application/offset+octet-stream',
        'upload-offset': String(offset),
        ...more,
      }),
      body,
    });

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    await start();
    const made = await asAdmin('POST', '/api/tokens', { name: 'tus-workers', role: 'worker' });
    token = made.body.token;
    await connect();
    const task = await asAdmin('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 3,
      config: { rounds: 1 },
    });
    taskId = task.body.id;
    const datas = await Promise.all(clients.map((c) => taskMessage(c, taskId)));
    datas.forEach((d, i) => (lease[d.rank] = { attempt: d.attempt, id: ids[i]! }));
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server?.stop();
    await db?.drop();
  });

  it('answers OPTIONS with the version, extensions and checksum algorithms', async () => {
    const res = await fetch(`${server.httpUrl}/api/tasks/${taskId}/rounds/1/updates/0`, {
      method: 'OPTIONS',
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('tus-version')).toBe('1.0.0');
    expect(res.headers.get('tus-extension')).toBe('creation,checksum,expiration,termination');
    expect(res.headers.get('tus-checksum-algorithm')).toContain('sha1');
  });

  it('completes a tus-js-client upload whose connections are cut at random offsets, resending little', async () => {
    const bytes = update(1);
    // Three cuts, each somewhere in the upload's bytes (the first past the POST).
    const cuts = [0, 1, 2].map(() => randomInt(2_000, bytes.length - 1_000_000));
    const proxy = await cuttingProxy(() => Number(new URL(server.httpUrl).port), [...cuts]);
    let digest: string | null = null;
    try {
      await new Promise<void>((resolve, reject) => {
        const u = new tus.Upload(bytes, {
          endpoint: `http://127.0.0.1:${proxy.port}${updateUrl(0)}`,
          headers: { authorization: `Bearer ${token}`, 'x-ai-farm-client': lease[0]!.id },
          retryDelays: [0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000],
          storeFingerprintForResuming: false,
          onAfterResponse: (_req, res) => {
            const d = res.getHeader('x-ai-farm-digest');
            if (d) digest = d;
          },
          onSuccess: () => resolve(),
          onError: reject,
        });
        u.start();
      });
    } finally {
      await proxy.close();
    }
    expect(digest).toBe(fileDigest(bytes));
    // Resumed, not started again: what was sent twice is what the cuts lost on the way.
    const again = proxy.forwarded() - bytes.length;
    expect(again).toBeLessThan(cuts.length * 16 * 1024 * 1024);
    const current = await asAdmin('GET', `/api/tasks/${taskId}/rounds/current`);
    expect(current.body.accepted_ranks).toContain(0);
  });

  it('refuses a wrong offset (409) and a checksum mismatch (460), and resumes after a server restart', async () => {
    const bytes = update(2);
    const location = await create(1, bytes.length);
    const cut1 = randomInt(1, 8 * 1024 * 1024);
    const part1 = bytes.subarray(0, cut1);
    const sha1 = (b: Uint8Array) => `sha1 ${createHash('sha1').update(b).digest('base64')}`;
    let res = await patch(location, 1, 0, part1, { 'upload-checksum': sha1(part1) });
    expect(res.status, await res.clone().text()).toBe(204);
    expect(res.headers.get('upload-offset')).toBe(String(cut1));

    // Not the stored offset: 409, nothing stored.
    res = await patch(location, 1, cut1 + 10, bytes.subarray(cut1 + 10, cut1 + 20));
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('offset_mismatch');

    // A body that does not match its checksum: 460, the offset stays.
    const cut2 = randomInt(cut1 + 1, bytes.length - 1);
    const part2 = bytes.subarray(cut1, cut2);
    res = await patch(location, 1, cut1, part2, { 'upload-checksum': sha1(Buffer.from('other')) });
    expect(res.status).toBe(460);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('checksum_mismatch');
    expect((await head(location, 1)).headers.get('upload-offset')).toBe(String(cut1));

    res = await patch(location, 1, cut1, part2, { 'upload-checksum': sha1(part2) });
    expect(res.status, await res.clone().text()).toBe(204);
    expect(res.headers.get('upload-offset')).toBe(String(cut2));

    // The server stops and starts again between two PATCH requests.
    await restart();
    const h = await head(location, 1);
    expect(h.status).toBe(200);
    expect(h.headers.get('upload-offset')).toBe(String(cut2));
    expect(h.headers.get('upload-length')).toBe(String(bytes.length));
    res = await patch(location, 1, cut2, bytes.subarray(cut2));
    expect(res.status, await res.clone().text()).toBe(204);
    expect(res.headers.get('x-ai-farm-digest')).toBe(fileDigest(bytes));
    // Finished: the upload is gone, the update counts.
    expect((await head(location, 1)).status).toBe(404);
    const rounds = await asAdmin('GET', `/api/tasks/${taskId}/rounds/current`);
    expect(rounds.body.accepted_ranks).toEqual(expect.arrayContaining([0, 1]));
  });

  it('refuses a bad header as soon as it is complete and drops the upload', async () => {
    const location = await create(2, 1000);
    const junk = Buffer.alloc(1000);
    junk.writeBigUInt64LE(10n, 0);
    junk.write('{not json!', 8);
    const res = await patch(location, 2, 0, junk);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    expect((await head(location, 2)).status).toBe(404);
  });

  it('lets an abandoned upload expire (410)', async () => {
    await restart({ UPLOAD_EXPIRY: 0.5 });
    const bytes = update(3);
    const location = await create(2, bytes.length);
    const res = await patch(location, 2, 0, bytes.subarray(0, 100_000));
    expect(res.status).toBe(204);
    // Waits for the expiry to pass (bounded), then every request on it is refused.
    let status = 0;
    for (let i = 0; i < 100 && status !== 410; i++) {
      status = (await head(location, 2)).status;
      if (status !== 410) await sleep(100);
    }
    expect(status).toBe(410);
    const again = await patch(location, 2, 100_000, bytes.subarray(100_000, 200_000));
    expect(again.status).toBe(410);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('upload_expired');
  });

  it('has the reference worker resume a cut upload from its offset and a cut download with Range', async () => {
    await restart();
    const bytes = update(4);
    const file = join(db.dir, 'rank2.safetensors');
    await writeFile(file, bytes);
    // Two cuts at least 100 kB apart, so each falls in the bytes of another connection.
    const first = randomInt(200_000, bytes.length - 1_200_000);
    const cuts = [first, randomInt(first + 100_000, bytes.length - 1_000_000)];
    const up = await cuttingProxy(() => Number(new URL(server.httpUrl).port), [...cuts], false, true);
    const transfer = {
      serverUrl: `http://127.0.0.1:${up.port}`,
      token,
      backoff: { initialMs: 10, maxMs: 200 },
    };
    try {
      const sent = await uploadUpdate(
        {
          uploadUrl: updateUrl(2).split('?')[0]!,
          file,
          attempt: lease[2]!.attempt,
          numSamples: 10,
          clientId: lease[2]!.id,
        },
        transfer,
      );
      expect(sent).toMatchObject({
        ok: true,
        status: 201,
        body: { accepted: true, digest: fileDigest(bytes) },
      });
      expect(sent.ok && sent.resumed).toBeGreaterThanOrEqual(cuts.length);
      expect(up.forwarded() - bytes.length).toBeLessThan(cuts.length * 16 * 1024 * 1024);
    } finally {
      await up.close();
    }
    // All three ranks are in: the task's final model, downloaded through cuts of the answer.
    let status = 0;
    for (let i = 0; i < 200 && status !== 200; i++) {
      status = (await asAdmin('GET', `/api/tasks/${taskId}/model`)).status;
      if (status !== 200) await sleep(100);
    }
    expect(status).toBe(200);
    const whole = await fetch(`${server.httpUrl}/api/tasks/${taskId}/model`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const model = Buffer.from(await whole.arrayBuffer());
    const downCuts = [randomInt(1_000, model.length - 1_000)];
    const down = await cuttingProxy(() => Number(new URL(server.httpUrl).port), [...downCuts], true);
    try {
      const dest = join(db.dir, 'final.safetensors');
      const got = await downloadModel(`/api/tasks/${taskId}/model`, dest, {
        ...transfer,
        serverUrl: `http://127.0.0.1:${down.port}`,
        token: adminToken,
      });
      expect(got).toMatchObject({ ok: true, bytes: model.length, resumed: 1 });
      expect((await readFile(dest)).equals(model)).toBe(true);
      // The cut answer is not fetched again: only what the cut lost comes twice.
      expect(down.forwarded()).toBeLessThan(model.length + 16 * 1024 * 1024);
    } finally {
      await down.close();
    }
  });
});
