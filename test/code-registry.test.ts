import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { MALICIOUS_ARCHIVES, rawTarGz } from './helpers/tar.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Sends raw bytes (not JSON). */
async function put(
  base: string,
  method: string,
  path: string,
  body: Buffer | string,
  token: string | null,
  type = 'application/octet-stream',
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
): Promise<{ status: number; headers: Headers; body: any }> {
  const headers: Record<string, string> = { 'content-type': type };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

const MODEL_PY = 'def create_model():\n    return "net"\n';
const FOLDER = rawTarGz([
  { name: 'pkg/', type: '5' },
  { name: 'pkg/train.py', data: 'print("train")\n' },
  { name: 'pkg/util.py', data: 'X = 1\n' },
  { name: 'pkg/link.py', type: '2', linkname: 'util.py' },
]);

describe.each(DIALECTS)('model registry and code bundles (%s)', (dialect) => {
  let ts: TestServer;
  let user: string;
  let otherUser: string;
  let worker: string;

  beforeAll(async () => {
    ts = await startTestServer(dialect, {
      MAX_CODE_BYTES: 64 * 1024,
      MAX_CODE_ENTRIES: 20,
      MAX_CODE_UNPACKED_BYTES: 100_000,
    });
    user = (await ts.api('POST', '/api/tokens', { name: 'alice', role: 'user' })).body.token;
    otherUser = (await ts.api('POST', '/api/tokens', { name: 'bob', role: 'user' })).body.token;
    worker = (await ts.api('POST', '/api/tokens', { name: 'w', role: 'worker' })).body.token;
  }, 60_000);
  afterAll(async () => ts?.stop());

  it('pushes a single-file version, idempotently, and refuses other content under the same version (409)', async () => {
    const first = await put(ts.url, 'PUT', '/api/models/mnist/1.0?filename=net.py', MODEL_PY, user);
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({
      name: 'mnist',
      version: '1.0',
      kind: 'file',
      file_name: 'net.py',
      digest: sha(MODEL_PY),
      size: Buffer.byteLength(MODEL_PY),
      created_by: 'alice',
    });
    const again = await put(ts.url, 'PUT', '/api/models/mnist/1.0?filename=net.py', MODEL_PY, user);
    expect(again.status).toBe(200);
    expect(again.body.digest).toBe(first.body.digest);
    const other = await put(ts.url, 'PUT', '/api/models/mnist/1.0?filename=net.py', `${MODEL_PY}#\n`, user);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('model_version_exists');
    // Workers read, they do not push.
    const byWorker = await put(ts.url, 'PUT', '/api/models/mnist/2.0', MODEL_PY, worker);
    expect(byWorker.status).toBe(403);
  });

  it('pushes a folder as tar.gz and serves both shapes on MODEL_SERVER_PORT', async () => {
    const pushed = await put(ts.url, 'PUT', '/api/models/resnet/2', FOLDER, user, 'application/gzip');
    expect(pushed.status).toBe(201);
    expect(pushed.body).toMatchObject({
      kind: 'folder',
      digest: sha(FOLDER),
      size: FOLDER.length,
      file_name: null,
    });

    const model = ts.server.modelUrl;
    const file = await fetch(`${model}/models/mnist/1.0`, { headers: { authorization: `Bearer ${worker}` } });
    expect(file.status).toBe(200);
    expect(await file.json()).toEqual({ name: 'mnist', version: '1.0', code: MODEL_PY });
    // The token may ride in the query, as the original's client builds URLs.
    const viaQuery = await fetch(`${model}/models/mnist/1.0?token=${worker}`);
    expect(viaQuery.status).toBe(200);
    expect((await fetch(`${model}/models/mnist/1.0`)).status).toBe(401);
    expect((await fetch(`${model}/models/mnist/1.0?token=afm_nope_nope_nope_nope_nope`)).status).toBe(401);
    expect((await fetch(`${model}/models/mnist/9.9?token=${worker}`)).status).toBe(404);

    const archive = await fetch(`${model}/models/resnet/2?token=${worker}`);
    expect(archive.status).toBe(200);
    expect(archive.headers.get('etag')).toBe(`"${sha(FOLDER)}"`);
    expect(archive.headers.get('x-ai-farm-digest')).toBe(sha(FOLDER));
    expect(Buffer.from(await archive.arrayBuffer()).equals(FOLDER)).toBe(true);
    const part = await fetch(`${model}/models/resnet/2?token=${worker}`, { headers: { range: 'bytes=0-9' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(FOLDER.subarray(0, 10))).toBe(true);
    const cached = await fetch(`${model}/models/resnet/2?token=${worker}`, {
      headers: { 'if-none-match': `"${sha(FOLDER)}"` },
    });
    expect(cached.status).toBe(304);
    // And by digest on the API port, as workers fetch a task's code.
    const blob = await fetch(`${ts.url}/api/bundles/${sha(FOLDER)}`, {
      headers: { authorization: `Bearer ${worker}` },
    });
    expect(Buffer.from(await blob.arrayBuffer()).equals(FOLDER)).toBe(true);
  });

  it('lists and shows versions', async () => {
    const list = await ts.api('GET', '/api/models', undefined, worker);
    expect(list.status).toBe(200);
    expect(list.body.total).toBe(2);
    expect(list.body.items.map((m: { name: string }) => m.name).sort()).toEqual(['mnist', 'resnet']);
    const only = await ts.api('GET', '/api/models?name=resnet', undefined, user);
    expect(only.body.items).toHaveLength(1);
    const shown = await ts.api('GET', '/api/models/resnet/2', undefined, user);
    expect(shown.body).toMatchObject({ name: 'resnet', version: '2', kind: 'folder', tasks: [] });
    expect((await ts.api('GET', '/api/models/nope/1', undefined, user)).status).toBe(404);
    expect((await ts.api('GET', '/api/models/bad@name/1', undefined, user)).status).toBe(400);
  });

  it.each(MALICIOUS_ARCHIVES)('refuses $what at push, naming the entry (400)', async ({ entries, names }) => {
    const evil = rawTarGz(entries);
    for (const [method, path] of [
      ['PUT', '/api/models/evil/1'],
      ['POST', '/api/bundles'],
    ] as const) {
      const r = await put(ts.url, method, path, evil, user, 'application/gzip');
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('unsafe_archive');
      expect(r.body.error.message).toContain(names);
      expect(r.body.error.details.entry).toBe(entries.at(-1)?.name);
    }
    expect((await ts.api('GET', '/api/models/evil/1', undefined, user)).status).toBe(404);
  });

  it('refuses archives past the size and entry limits, bodies past MAX_CODE_BYTES, and non-archives', async () => {
    const bomb = rawTarGz([{ name: 'big.bin', declaredSize: 10_000_000 }]);
    const r1 = await put(ts.url, 'POST', '/api/bundles', bomb, user, 'application/gzip');
    expect(r1.status).toBe(400);
    expect(r1.body.error.message).toContain('unpacks past the limit');
    const many = rawTarGz(Array.from({ length: 25 }, (_, i) => ({ name: `f${i}.py`, data: 'x' })));
    const r2 = await put(ts.url, 'POST', '/api/bundles', many, user, 'application/gzip');
    expect(r2.status).toBe(400);
    expect(r2.body.error.message).toContain('more than 20 entries');
    const huge = await put(ts.url, 'PUT', '/api/models/huge/1', Buffer.alloc(70 * 1024, 1), user);
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('code_too_large');
    const junk = await put(ts.url, 'POST', '/api/bundles', 'not an archive', user, 'application/gzip');
    expect(junk.status).toBe(400);
    expect(junk.body.error.code).toBe('invalid_archive');
    // The server is fine afterwards.
    expect((await ts.api('GET', '/api/models')).status).toBe(200);
  });

  it('resolves config.model and config.code at task creation (404 unknown, 400 malformed)', async () => {
    const byModel = await ts.api(
      'POST',
      '/api/tasks',
      { type: 'command', requirements: {}, config: { command: 'python3 net.py', model: 'mnist@1.0' } },
      user,
    );
    expect(byModel.status).toBe(201);
    expect(byModel.body.config.code).toEqual({
      digest: sha(MODEL_PY),
      kind: 'file',
      size: Buffer.byteLength(MODEL_PY),
      file_name: 'net.py',
    });
    const bundle = await put(ts.url, 'POST', '/api/bundles', FOLDER, user, 'application/gzip');
    expect([200, 201]).toContain(bundle.status);
    expect(bundle.body.digest).toBe(sha(FOLDER));
    const byCode = await ts.api(
      'POST',
      '/api/tasks',
      { type: 'command', requirements: {}, config: { command: 'ls', code: { digest: sha(FOLDER) } } },
      user,
    );
    expect(byCode.status).toBe(201);
    expect(byCode.body.config.code).toEqual({ digest: sha(FOLDER), kind: 'folder', size: FOLDER.length });

    const refused: [Record<string, unknown>, number, string][] = [
      [{ model: 'mnist@7' }, 404, 'model_not_found'],
      [{ model: 'no-version' }, 400, 'invalid_model'],
      [{ code: { digest: sha('nothing') } }, 404, 'code_not_found'],
      [{ code: { digest: 'md5:abc' } }, 400, 'invalid_code'],
    ];
    for (const [config, status, code] of refused) {
      const r = await ts.api('POST', '/api/tasks', { type: 'command', requirements: {}, config }, user);
      expect(r.status, code).toBe(status);
      expect(r.body.error.code).toBe(code);
    }
    const batch = await ts.api(
      'POST',
      '/api/tasks/batch',
      {
        tasks: [
          { type: 'command', requirements: {}, config: { model: 'mnist@1.0' } },
          { type: 'command', requirements: {}, config: { model: 'gone@1' } },
        ],
      },
      user,
    );
    expect(batch.status).toBe(404);
    expect(batch.body.error.message).toContain('tasks[1]');
  });

  it('refuses to delete a version an unfinished task uses (409), then deletes it once the task ends', async () => {
    const shown = await ts.api('GET', '/api/models/mnist/1.0', undefined, user);
    expect(shown.body.tasks.length).toBeGreaterThanOrEqual(1);
    const taskId = shown.body.tasks[0].id as number;
    const refused = await ts.api('DELETE', '/api/models/mnist/1.0', undefined, user);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('model_in_use');
    expect(refused.body.error.details.tasks).toContain(taskId);
    // Only its pusher or an admin may delete it.
    await ts.api('PUT', `/api/tasks/${taskId}/status`, { status: 'cancelled' }, user);
    expect((await ts.api('DELETE', '/api/models/mnist/1.0', undefined, otherUser)).status).toBe(403);
    const deleted = await ts.api('DELETE', '/api/models/mnist/1.0', undefined, user);
    expect(deleted.status).toBe(204);
    expect((await ts.api('GET', '/api/models/mnist/1.0', undefined, user)).status).toBe(404);
    expect((await fetch(`${ts.server.modelUrl}/models/mnist/1.0?token=${worker}`)).status).toBe(404);
  });
});

describe('the model server with ALLOW_ANONYMOUS_CLIENTS=true', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer('sqlite', { ALLOW_ANONYMOUS_CLIENTS: true });
  }, 60_000);
  afterAll(async () => ts?.stop());

  it('serves code without a token, as the original did, but still checks a token that is sent', async () => {
    expect((await put(ts.url, 'PUT', '/api/models/m/1', MODEL_PY, ts.adminToken)).status).toBe(201);
    const r = await fetch(`${ts.server.modelUrl}/models/m/1`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ name: 'm', version: '1', code: MODEL_PY });
    expect((await fetch(`${ts.server.modelUrl}/models/m/1?token=afm_bad_bad_bad_bad_bad_bad`)).status).toBe(
      401,
    );
    // Pushing still needs a token.
    expect((await put(ts.url, 'PUT', '/api/models/m/2', MODEL_PY, null)).status).toBe(401);
  });
});
