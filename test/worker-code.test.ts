import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CodeCache } from '../src/worker/code/code-cache.js';
import { CliProcess, runCli } from './clients/processes.js';
import { waitFor } from './helpers/wait.js';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { MALICIOUS_ARCHIVES, rawTarGz } from './helpers/tar.js';

const hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * A server that is not ours and not honest: it answers /api/bundles/sha256:<hex> with whatever
 * the test put there, so the worker's own checks are what stands between it and the disk.
 */
class HostileServer {
  readonly blobs = new Map<string, Buffer>();
  readonly hits = new Map<string, number>();
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const m = /^\/api\/bundles\/sha256:([0-9a-f]{64})$/.exec(req.url ?? '');
      const blob = m ? this.blobs.get(m[1] as string) : undefined;
      if (m) this.hits.set(m[1] as string, (this.hits.get(m[1] as string) ?? 0) + 1);
      if (!blob) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":{"code":"code_not_found","message":"no such code"}}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      res.end(blob);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Serves `bytes` under their own digest; returns it. */
  put(bytes: Buffer): string {
    const h = hex(bytes);
    this.blobs.set(h, bytes);
    return `sha256:${h}`;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe('the worker code cache', () => {
  const server = new HostileServer();
  let dir: string;
  let cacheDir: string;
  let work: string;
  const transfer = () => ({ serverUrl: server.url, maxAttempts: 1 });

  beforeAll(async () => {
    await server.start();
  });
  afterAll(async () => server.close());
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'aifarm-codecache-'));
    cacheDir = join(dir, 'cache');
    work = join(dir, 'work');
    return () => rmSync(dir, { recursive: true, force: true });
  });

  it('downloads once, unpacks into a fresh folder per attempt, and keeps a single file under its name', async () => {
    const archive = rawTarGz([
      { name: 'src/', type: '5' },
      { name: 'src/main.py', data: 'print("hi")\n' },
      { name: 'main.py', type: '2', linkname: 'src/main.py' },
    ]);
    const digest = server.put(archive);
    const cache = new CodeCache({ dir: cacheDir, maxBytes: 1 << 20, workRoot: work });
    const ref = { digest, kind: 'folder' as const, size: archive.length };
    const a = await cache.prepare(ref, 'a', transfer());
    const b = await cache.prepare(ref, 'b', transfer());
    expect(a.dir).not.toBe(b.dir);
    expect(readFileSync(join(a.dir, 'src/main.py'), 'utf8')).toBe('print("hi")\n');
    expect(readFileSync(join(b.dir, 'main.py'), 'utf8')).toBe('print("hi")\n');
    expect(server.hits.get(digest.slice(7))).toBe(1);
    await a.cleanup();
    expect(existsSync(a.dir)).toBe(false);
    expect(existsSync(b.dir)).toBe(true);
    await b.cleanup();

    const file = Buffer.from('def create_model(): pass\n');
    const fileDigest = server.put(file);
    const c = await cache.prepare(
      { digest: fileDigest, kind: 'file', size: file.length, file_name: 'net.py' },
      'c',
      transfer(),
    );
    expect(readFileSync(join(c.dir, 'net.py'), 'utf8')).toBe(file.toString());
    await c.cleanup();
  });

  it('refuses a download whose digest does not match, and caches nothing', async () => {
    const honest = Buffer.from('the real code');
    const digest = `sha256:${hex(honest)}`;
    server.blobs.set(hex(honest), Buffer.from('something else entirely'));
    const cache = new CodeCache({ dir: cacheDir, maxBytes: 1 << 20, workRoot: work });
    await expect(
      cache.prepare({ digest, kind: 'file', size: honest.length }, 'm', transfer()),
    ).rejects.toThrow(
      /digest mismatch: the task names sha256:[0-9a-f]{64} but the server sent sha256:[0-9a-f]{64}/,
    );
    expect(readdirSync(cacheDir)).toEqual([]);
    expect(existsSync(work) ? readdirSync(work) : []).toEqual([]);
  });

  it('evicts the least recently used blobs past its size, never one in use', async () => {
    const blobs = [0, 1, 2].map((i) => Buffer.alloc(400, i));
    const digests = blobs.map((b) => server.put(b));
    const cache = new CodeCache({ dir: cacheDir, maxBytes: 1000, workRoot: work });
    const held = await cache.acquire(digests[0] as string, transfer());
    const second = await cache.acquire(digests[1] as string, transfer());
    await second.release();
    // 1200 bytes > 1000: the third pushes out the least recently used not in use (the second).
    const third = await cache.acquire(digests[2] as string, transfer());
    await third.release();
    const names = () => readdirSync(cacheDir).sort();
    expect(names()).toEqual([digests[0], digests[2]].map((d) => (d as string).slice(7)).sort());
    await held.release();
    // Used again: the third becomes the most recent, so the first (released) goes next.
    const again = await cache.acquire(digests[1] as string, transfer());
    await again.release();
    expect(names()).toContain((digests[1] as string).slice(7));
    expect(names()).toHaveLength(2);
    expect(server.hits.get((digests[1] as string).slice(7))).toBe(2);
  });

  it.each(MALICIOUS_ARCHIVES)('refuses $what before writing anything', async ({ entries, names }) => {
    const digest = server.put(rawTarGz(entries));
    const cache = new CodeCache({ dir: cacheDir, maxBytes: 1 << 20, workRoot: work });
    await expect(cache.prepare({ digest, kind: 'folder', size: 0 }, 'evil', transfer())).rejects.toThrow(
      names,
    );
    expect(readdirSync(work)).toEqual([]);
    expect(existsSync('/tmp/evil.py')).toBe(false);
  });

  it('refuses an archive past its size or entry-count limits', async () => {
    const digest = server.put(
      rawTarGz([
        { name: 'a', data: 'x' },
        { name: 'big', declaredSize: 5_000_000 },
      ]),
    );
    const cache = new CodeCache({
      dir: cacheDir,
      maxBytes: 1 << 20,
      workRoot: work,
      limits: { maxEntries: 100, maxUnpackedBytes: 1_000_000 },
    });
    await expect(cache.prepare({ digest, kind: 'folder', size: 0 }, 'bomb', transfer())).rejects.toThrow(
      /unpacks past the limit of 1000000 bytes/,
    );
    const many = server.put(rawTarGz(Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, data: 'x' }))));
    await expect(
      cache.prepare({ digest: many, kind: 'folder', size: 0 }, 'many', transfer()),
    ).rejects.toThrow(/more than 100 entries/);
    expect(readdirSync(work)).toEqual([]);
  });
});

describe.each(DIALECTS)(
  'tasks created with --code run on a worker that never had the code (%s)',
  (dialect) => {
    let ts: TestServer;
    let dir: string;
    let env: Record<string, string>;
    let worker: CliProcess;

    beforeAll(async () => {
      ts = await startTestServer(dialect);
      dir = mkdtempSync(join(tmpdir(), 'aifarm-code-e2e-'));
      env = { AI_FARM_SERVER: ts.url, AI_FARM_TOKEN: ts.adminToken };
      const token = (await ts.api('POST', '/api/tokens', { name: 'code-worker', role: 'worker' })).body.token;
      // The worker runs in an empty folder: the only way it can have the code is the bundle.
      const empty = join(dir, 'worker-home');
      mkdirSync(empty);
      worker = new CliProcess(
        [
          'worker',
          '--id-file',
          join(empty, 'id'),
          '--code-cache',
          join(empty, 'cache'),
          '--code-cache-mb',
          '8',
        ],
        { AI_FARM_SERVER: ts.url, AI_FARM_TOKEN: token },
        { cwd: empty },
      );
      await worker.waitFor(/registered as/, 60_000);
    }, 120_000);
    afterAll(async () => {
      await worker?.stop();
      await ts?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const finished = (id: number) =>
      waitFor(
        `task ${id} finished`,
        async () => {
          const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
          return ['completed', 'failed', 'error', 'cancelled'].includes(t.status) ? t : null;
        },
        120_000,
      );

    it('ships a folder with --code (honouring .gitignore and --exclude) and runs the command in it', async () => {
      const project = join(dir, 'project');
      mkdirSync(join(project, 'lib'), { recursive: true });
      writeFileSync(
        join(project, 'run.sh'),
        'set -e\n. ./lib/common.sh\nls -A | sort | tr "\\n" " " >&2\necho "{\\"result\\": {\\"greeting\\": \\"$GREETING\\", \\"files\\": \\"$(ls -A | sort | tr "\\n" " ")\\"}}"\n',
      );
      writeFileSync(join(project, 'lib', 'common.sh'), 'GREETING=hello-from-the-bundle\n');
      writeFileSync(join(project, '.gitignore'), 'secret.txt\n');
      writeFileSync(join(project, 'secret.txt'), 'do not ship');
      writeFileSync(join(project, 'notes.tmp'), 'do not ship either');
      const r = await runCli(
        ['tasks', 'create', '--code', project, '--exclude', '*.tmp', '--command', 'sh run.sh', '--json'],
        env,
      );
      expect(r.code, r.stderr).toBe(0);
      const task = JSON.parse(r.stdout);
      expect(task.config.code).toMatchObject({ kind: 'folder', digest: expect.stringMatching(/^sha256:/) });
      const done = await finished(task.id);
      expect(done.status, done.error_log).toBe('completed');
      expect(done.result).toMatchObject({
        greeting: 'hello-from-the-bundle',
        files: '.gitignore lib run.sh ',
      });
    }, 180_000);

    it('runs a registered single-file model with --model; models list, show and rm', async () => {
      const script = join(dir, 'hello.py');
      writeFileSync(script, 'import json\nprint(json.dumps({"result": {"ran": "hello.py"}}))\n');
      const pushed = await runCli(['models', 'push', 'hello', '1', script, '--json'], env);
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(JSON.parse(pushed.stdout)).toMatchObject({
        name: 'hello',
        version: '1',
        kind: 'file',
        file_name: 'hello.py',
      });
      const listed = await runCli(['models', 'list'], env);
      expect(listed.stdout).toMatch(/^hello@1 file hello\.py/m);
      const r = await runCli(
        ['tasks', 'create', '--model', 'hello@1', '--command', 'python3 hello.py', '--json'],
        env,
      );
      expect(r.code, r.stderr).toBe(0);
      const done = await finished(JSON.parse(r.stdout).id);
      expect(done.status, done.error_log).toBe('completed');
      expect(done.result).toMatchObject({ ran: 'hello.py' });
      const shown = await runCli(['models', 'show', 'hello@1'], env);
      expect(shown.stdout).toMatch(new RegExp(`tasks: #${done.id} completed`));
      const rm = await runCli(['models', 'rm', 'hello@1'], env);
      expect(rm.code, rm.stderr).toBe(0);
      expect((await runCli(['models', 'show', 'hello@1'], env)).code).toBe(1);
      expect((await runCli(['models', 'show', 'no-at-sign'], env)).code).toBe(2);
    }, 180_000);
  },
);
