import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, resolveDatabaseTarget } from '../src/storage/db.js';
import { CLI, cliEnv, startCliServer, type CliServer } from './helpers/cli.js';
import { createTestDatabase, DIALECTS, TEST_MYSQL_URL, type TestDatabase } from './helpers/db.js';
import { request } from './helpers/server.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * `ai-farm server` as a user runs it: a child process of the built CLI, stopped by a
 * signal. Each test gets its own database and folders.
 */
describe.each(DIALECTS)('ai-farm server on %s', (dialect) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function fresh(): Promise<TestDatabase> {
    const db = await createTestDatabase(dialect);
    cleanups.push(() => db.drop());
    return db;
  }
  const envFor = (db: TestDatabase, extra: Record<string, string> = {}) => ({
    SERVER_HOST: '127.0.0.1',
    SERVER_PORT: '0',
    DATABASE_URL: db.url,
    DATA_DIR: join(db.dir, 'data'),
    LOG_DIR: join(db.dir, 'logs'),
    RATE_LIMIT: 'off',
    ...extra,
  });
  async function start(db: TestDatabase, extra: Record<string, string> = {}): Promise<CliServer> {
    const s = await startCliServer([], envFor(db, extra));
    cleanups.push(() => s.stop('SIGKILL'));
    return s;
  }

  it('starts, answers /health and /ready, prints an admin token on the first start only', async () => {
    const db = await fresh();
    const first = await start(db);
    expect((await request(first.url, 'GET', '/health')).body).toEqual({ status: 'ok' });
    expect((await request(first.url, 'GET', '/ready')).body).toEqual({ status: 'ready', database: 'ok' });

    const tokens = first.stdout().match(/afm_[A-Za-z0-9_-]{20,}/g) ?? [];
    expect(new Set(tokens).size).toBe(1);
    const token = tokens[0] as string;
    expect(first.stdout()).toMatch(/shown this once/);
    const tasks = await request(first.url, 'GET', '/api/tasks', undefined, token);
    expect(tasks.status).toBe(200);
    expect((await first.stop('SIGTERM')).code).toBe(0);

    const second = await start(db);
    expect(second.stdout()).not.toMatch(/afm_/);
    expect((await request(second.url, 'GET', '/api/tasks', undefined, token)).status).toBe(200);
    expect((await second.stop('SIGTERM')).code).toBe(0);

    // The token (and the admin-panel password, when one is printed) went to the terminal,
    // never to a log file.
    const password = /this password[\s\S]*?\n\s+(\S+)\n/.exec(first.stdout())?.[1];
    const logDir = join(db.dir, 'logs');
    const files = readdirSync(logDir);
    expect(files).toEqual(expect.arrayContaining(['server.log', 'error.log', 'access.log']));
    for (const f of files) {
      const text = readFileSync(join(logDir, f), 'utf8');
      expect(text).not.toContain(token);
      if (password) expect(text).not.toContain(password);
    }
  });

  it.each(['SIGINT', 'SIGTERM'] as const)(
    'on %s finishes the request in flight, closes the database and exits 0',
    async (signal) => {
      const db = await fresh();
      const token = 'afm_' + 'k'.repeat(43);
      const server = await start(db, { ADMIN_TOKEN: token });

      // A request whose body is half sent when the signal arrives: it is in flight.
      const slow = slowPost(server.url, '/api/tasks', token, {
        type: 'in-flight',
        requirements: {},
        config: { note: 'x'.repeat(2000) },
      });
      await slow.headersSent;
      await sleep(200);
      server.child.kill(signal);
      // The server stops accepting at once.
      await waitFor(
        '/health to answer 503 or close',
        async () => {
          const r = await fetch(`${server.url}/health`).catch(() => null);
          return r === null || r.status === 503;
        },
        5000,
        { everyMs: 25 },
      );
      expect(server.alive()).toBe(true);
      slow.finish();
      const answer = await slow.response;
      expect(answer.status).toBe(201);
      // ...and closes its connection, so a keep-alive client cannot hold the exit up.
      expect(answer.connection).toBe('close');
      const answeredAt = Date.now();
      const exit = await server.exited;
      expect(Date.now() - answeredAt).toBeLessThan(3000);
      expect(exit.code).toBe(0);
      expect(exit.signal).toBeNull();

      // What the server acknowledged is in the database, and the database was closed
      // cleanly (SQLite removes its WAL file when the last connection closes).
      const handle = await openDatabase(
        resolveDatabaseTarget({ DATABASE_URL: db.url, db_config: null, DATA_DIR: db.dir }),
      );
      try {
        const row = await handle.db
          .selectFrom('tasks')
          .select(['id', 'type'])
          .where('id', '=', answer.body.id as number)
          .executeTakeFirst();
        expect(row?.type).toBe('in-flight');
      } finally {
        await handle.close();
      }
      if (dialect === 'sqlite') expect(existsSync(`${db.url}-wal`)).toBe(false);
      else expect(await mysqlConnectionsTo(db.url)).toBe(0);
      expect(readFileSync(join(db.dir, 'logs', 'server.log'), 'utf8')).toMatch(/"signal":"SIG(INT|TERM)"/);
    },
  );

  // Signal handling does not depend on the dialect: checked once.
  it.runIf(dialect === 'sqlite')(
    'stops in order when the signal comes while starting, or the instant it is up',
    async () => {
      const db = await fresh();
      // While starting: as soon as it has said anything (the database is open by then).
      const starting = spawn(process.execPath, [CLI, 'server'], {
        env: cliEnv({ ...envFor(db), WEBSOCKET_PORT: '0', MODEL_SERVER_PORT: '0' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      cleanups.push(async () => starting.kill('SIGKILL'));
      let out = '';
      const exited = new Promise<[number | null, string | null]>((r) =>
        starting.on('close', (code, sig) => r([code, sig])),
      );
      await new Promise<void>((r) =>
        starting.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          r();
        }),
      );
      starting.kill('SIGTERM');
      expect(await exited).toEqual([0, null]);
      expect(out).toMatch(/"signal":"SIGTERM"/);

      // The instant it printed its URL.
      for (let i = 0; i < 2; i++) {
        const s = await start(db);
        s.child.kill('SIGINT');
        expect((await s.exited).code).toBe(0);
      }
    },
  );
});

/** How many connections MariaDB has open on the database of `url`. */
async function mysqlConnectionsTo(url: string): Promise<number> {
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  const root = await createConnection(TEST_MYSQL_URL);
  try {
    const [rows] = await root.query(
      'SELECT COUNT(*) AS n FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()',
      [name],
    );
    return Number((rows as { n: number }[])[0]?.n);
  } finally {
    await root.end();
  }
}

/** A POST whose body is sent in two halves: the second only when `finish()` is called. */
function slowPost(base: string, path: string, token: string, body: unknown) {
  const payload = Buffer.from(JSON.stringify(body));
  const half = Math.floor(payload.length / 2);
  const u = new URL(path, base);
  let headersSent!: () => void;
  const sent = new Promise<void>((r) => (headersSent = r));
  const req = httpRequest({
    host: u.hostname,
    port: u.port,
    path: u.pathname,
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'content-length': payload.length,
    },
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the test inspects arbitrary JSON
  const response = new Promise<{ status: number; connection?: string; body: any }>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          connection: res.headers.connection,
          body: JSON.parse(text) as unknown,
        }),
      );
    });
    req.on('error', reject);
  });
  req.write(payload.subarray(0, half), () => headersSent());
  return {
    headersSent: sent,
    response,
    finish: () => req.end(payload.subarray(half)),
  };
}
