import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { generateToken } from '../../src/auth/token-service.js';
import { startServer, type RunningServer } from '../../src/main.js';
import type { Dialect } from '../../src/storage/db.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { request, testConfig, type ApiResponse } from './server.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/** The machine's shared Redis (never stopped by a test). */
export const TEST_REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A REDIS_KEY_PREFIX of its own, so test files sharing one Redis never see each other. */
export const freshPrefix = (): string => `aifarm-test-${randomBytes(5).toString('hex')}:`;

/** Several server instances on one database and one Redis: a farm scaled out. */
export interface TestFarm {
  db: TestDatabase;
  servers: RunningServer[];
  adminToken: string;
  /** fetch against instance `i` (admin token unless `token` is given). */
  api(i: number, method: string, path: string, body?: unknown, token?: string | null): Promise<ApiResponse>;
  stop(): Promise<void>;
}

/**
 * Starts `n` instances sharing a fresh database and `redisUrl` (with a fresh key prefix).
 * Each has its own ports and LOG_DIR (`<db.dir>/logs-<i>`).
 */
export async function startFarm(
  dialect: Dialect,
  n: number,
  overrides: Record<string, unknown> = {},
  redisUrl = TEST_REDIS_URL,
): Promise<TestFarm> {
  const db = await createTestDatabase(dialect);
  const adminToken = generateToken();
  const prefix = freshPrefix();
  const servers: RunningServer[] = [];
  const stop = async () => {
    for (const s of servers.splice(0).reverse()) await s.stop();
    await db.drop();
  };
  try {
    for (let i = 0; i < n; i++) {
      const logDir = join(db.dir, `logs-${i}`);
      mkdirSync(logDir, { recursive: true });
      const config = testConfig(db, {
        ADMIN_TOKEN: adminToken,
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: prefix,
        LOG_DIR: logDir,
        ...overrides,
      });
      servers.push(await startServer(config));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    db,
    servers,
    adminToken,
    api: (i, method, path, body, token) =>
      request(
        (servers[i] as RunningServer).httpUrl,
        method,
        path,
        body,
        token === undefined ? adminToken : token,
      ),
    stop,
  };
}

/** True when a Redis answers PING on the port. */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = new Socket();
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    sock.connect(port, '127.0.0.1', () => sock.write('PING\r\n'));
    sock.once('data', (d) => done(String(d).startsWith('+PONG')));
  });
}

/**
 * A redis-server of the test's own on a random port (no persistence), which the test may
 * kill and start again. The machine's shared Redis on 6379 is never touched.
 */
export class PrivateRedis {
  private child: ChildProcess | null = null;

  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateRedis> {
    const r = new PrivateRedis(await freePort());
    await r.restart();
    return r;
  }

  /** Starts (again) on the same port; resolves once it answers. */
  async restart(): Promise<void> {
    if (this.child) throw new Error('already running');
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    this.child = child;
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    await waitFor(`redis-server on port ${this.port}`, () => pings(this.port), 15_000);
  }

  /** SIGKILL: no goodbye to anyone, like a crash. Resolves once the process is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const gone = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.kill('SIGKILL');
    await gone;
    this.child = null;
  }

  /** SIGSTOP: the process hangs with its sockets open (nothing is closed, nothing answers). */
  freeze(): void {
    this.child?.kill('SIGSTOP');
  }

  /** SIGCONT after `freeze`. */
  thaw(): void {
    this.child?.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    this.thaw();
    await this.kill();
  }
}
