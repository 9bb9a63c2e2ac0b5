import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createConnection, type Connection } from 'mysql2/promise';
import { afterEach, describe, expect, it } from 'vitest';
import { startCliServer, type CliServer } from './helpers/cli.js';
import { createTestDatabase, TEST_MYSQL_URL, type TestDatabase } from './helpers/db.js';
import { request, type ApiResponse } from './helpers/server.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { sleep } from './helpers/wait.js';

/**
 * "A lost database connection never crashes the server": the server runs as a child
 * process (so a crash would show as an exit) on MariaDB, which the test takes away.
 */
describe('losing the MariaDB connection', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  const token = 'afm_' + 'o'.repeat(43);
  const newTask = { type: 'outage', requirements: {} };

  async function serve(
    db: TestDatabase,
    databaseUrl: string,
    extra: Record<string, string> = {},
  ): Promise<CliServer> {
    const s = await startCliServer([], {
      ...extra,
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      DATABASE_URL: databaseUrl,
      LOG_DIR: join(db.dir, 'logs'),
      DATA_DIR: join(db.dir, 'data'),
      RATE_LIMIT: 'off',
      ADMIN_TOKEN: token,
    });
    cleanups.push(() => s.stop('SIGKILL'));
    return s;
  }
  async function rootConnection(): Promise<Connection> {
    const c = await createConnection(TEST_MYSQL_URL);
    cleanups.push(() => c.end());
    return c;
  }
  const dbNameOf = (db: TestDatabase) => decodeURIComponent(new URL(db.url).pathname.slice(1));

  /** Every answer is a success or the documented 503; nothing else (no 500, no hang). */
  function expectSuccessOr503(r: ApiResponse, ok: number) {
    if (r.status === ok) return;
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.error.code).toBe('database_unavailable');
    expect(r.body.error.message).toMatch(/database is unavailable/i);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
  }

  async function storedIds(root: Connection, db: TestDatabase): Promise<Set<number>> {
    const [rows] = await root.query(`SELECT id FROM \`${dbNameOf(db)}\`.tasks`);
    return new Set((rows as { id: number }[]).map((r) => r.id));
  }

  it('survives its connections being killed, reconnects, and loses nothing acknowledged', async () => {
    const db = await createTestDatabase('mysql');
    cleanups.push(() => db.drop());
    const server = await serve(db, db.url);
    const root = await rootConnection();
    const api = (method: string, path: string, body?: unknown) =>
      request(server.url, method, path, body, token);

    const acknowledged: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await api('POST', '/api/tasks', newTask);
      expect(r.status).toBe(201);
      acknowledged.push(r.body.id as number);
    }

    let killed = 0;
    let unavailable = 0;
    for (let round = 0; round < 5; round++) {
      const inFlight = Array.from({ length: 24 }, (_, i) => {
        const post = i % 3 !== 0;
        const answer = post ? api('POST', '/api/tasks', newTask) : api('GET', '/api/tasks?limit=5');
        return answer.then((r) => ({ post, r }));
      });
      await sleep(round * 3);
      // Only this test's connections: those whose current database is the test database.
      const [victims] = await root.query(
        'SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()',
        [dbNameOf(db)],
      );
      for (const { id } of victims as { id: number }[]) {
        await root.query(`KILL CONNECTION ${Number(id)}`).catch(() => undefined); // already gone
        killed++;
      }
      for (const { post, r } of await Promise.all(inFlight)) {
        expectSuccessOr503(r, post ? 201 : 200);
        if (r.status === 201) acknowledged.push(r.body.id as number);
        if (r.status === 503) unavailable++;
      }
    }
    expect(killed).toBeGreaterThan(0);
    // Which requests met a dead connection is up to timing; the ones that did said so.
    console.info(`killed ${killed} connections; ${unavailable} requests answered 503`);

    expect(server.alive()).toBe(true);
    // The pool reconnects by itself.
    expect((await api('GET', '/ready')).status).toBe(200);
    const list = await api('GET', '/api/tasks?type=outage&limit=1');
    expect(list.status).toBe(200);
    const stored = await storedIds(root, db);
    for (const id of acknowledged) expect(stored.has(id), `task ${id}`).toBe(true);
    expect(list.body.total).toBe(stored.size);
  });

  it('answers 503 with Retry-After while the database is unreachable, and recovers when it is back', async () => {
    const db = await createTestDatabase('mysql');
    cleanups.push(() => db.drop());
    const target = new URL(TEST_MYSQL_URL);
    const proxy: TcpProxy = await startTcpProxy(target.hostname, Number(target.port || 3306));
    cleanups.push(() => proxy.close());
    const viaProxy = new URL(db.url);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    const server = await serve(db, viaProxy.toString());
    const root = await rootConnection();
    const api = (method: string, path: string, body?: unknown) =>
      request(server.url, method, path, body, token);

    const acknowledged: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await api('POST', '/api/tasks', newTask);
      expect(r.status).toBe(201);
      acknowledged.push(r.body.id as number);
    }

    await proxy.cut();
    for (const [method, path, body] of [
      ['GET', '/api/tasks', undefined],
      ['POST', '/api/tasks', newTask],
      ['GET', `/api/tasks/${acknowledged[0]}`, undefined],
      ['PUT', `/api/tasks/${acknowledged[0]}/status`, { status: 'paused' }],
      ['DELETE', `/api/tasks/${acknowledged[1]}`, undefined],
      ['GET', '/api/clients', undefined],
      ['GET', '/ready', undefined],
    ] as const) {
      const started = Date.now();
      const r = await api(method, path, body);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(503);
      expectSuccessOr503(r, 503);
      expect(Date.now() - started).toBeLessThan(6000);
    }
    // The process is alive and says so.
    expect((await api('GET', '/health')).body).toEqual({ status: 'ok' });
    expect(server.alive()).toBe(true);

    await proxy.restore();
    const end = Date.now() + 15_000;
    let ready = await api('GET', '/ready');
    while (ready.status !== 200 && Date.now() < end) {
      await sleep(100);
      ready = await api('GET', '/ready');
    }
    expect(ready.body).toEqual({ status: 'ready', database: 'ok' });
    const after = await api('POST', '/api/tasks', newTask);
    expect(after.status).toBe(201);
    acknowledged.push(after.body.id as number);

    const stored = await storedIds(root, db);
    for (const id of acknowledged) expect(stored.has(id), `task ${id}`).toBe(true);
    expect(server.alive()).toBe(true);
    // The outage is in error.log, explained.
    const errors = readFileSync(join(db.dir, 'logs', 'error.log'), 'utf8');
    expect(errors).toMatch(/ECONNREFUSED|PROTOCOL_CONNECTION_LOST/);
    // ...and it still shuts down promptly (no timer of a dead connection holds it open).
    const stopping = Date.now();
    expect((await server.stop('SIGTERM')).code).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(5000);
  });

  it('answers 503 instead of hanging when the database stops answering (network partition)', async () => {
    const db = await createTestDatabase('mysql');
    cleanups.push(() => db.drop());
    const target = new URL(TEST_MYSQL_URL);
    const proxy = await startTcpProxy(target.hostname, Number(target.port || 3306));
    cleanups.push(() => proxy.close());
    const viaProxy = new URL(db.url);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    const server = await serve(db, viaProxy.toString(), { DB_QUERY_TIMEOUT: '1' });
    const root = await rootConnection();
    const api = (method: string, path: string, body?: unknown) =>
      request(server.url, method, path, body, token);

    const before = await api('POST', '/api/tasks', newTask);
    expect(before.status).toBe(201);

    proxy.freeze();
    // Several at once, on pooled and on fresh connections: each one gets an answer.
    const started = Date.now();
    const during = await Promise.all([
      api('GET', '/ready'),
      ...Array.from({ length: 6 }, () => api('GET', '/api/tasks')),
      api('POST', '/api/tasks', newTask),
    ]);
    for (const r of during) {
      expect(r.status, JSON.stringify(r.body)).toBe(503);
      expectSuccessOr503(r, 503);
    }
    // DB_QUERY_TIMEOUT (1 s) on a pooled connection, the connect timeout (5 s) on a new one.
    expect(Date.now() - started).toBeLessThan(8000);
    expect(server.alive()).toBe(true);

    proxy.thaw();
    const end = Date.now() + 15_000;
    let ready = await api('GET', '/ready');
    while (ready.status !== 200 && Date.now() < end) {
      await sleep(100);
      ready = await api('GET', '/ready');
    }
    expect(ready.status).toBe(200);
    expect((await api('GET', `/api/tasks/${before.body.id}`)).status).toBe(200);
    expect((await storedIds(root, db)).has(before.body.id as number)).toBe(true);
    const stopping = Date.now();
    expect((await server.stop('SIGTERM')).code).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(5000);
  });

  it('refuses to start, saying why, when the database cannot be reached', async () => {
    const db = await createTestDatabase('mysql');
    cleanups.push(() => db.drop());
    const proxy = await startTcpProxy('127.0.0.1', 1);
    const port = proxy.port;
    await proxy.close();
    const nowhere = new URL(db.url);
    nowhere.hostname = '127.0.0.1';
    nowhere.port = String(port);
    await expect(serve(db, nowhere.toString())).rejects.toThrow(/exited with 1[\s\S]*ECONNREFUSED/);
  });
});
