import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { generateToken } from '../../src/auth/token-service.js';
import { startServer, type RunningServer } from '../../src/main.js';
import type { Dialect } from '../../src/storage/db.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { request, type ApiResponse } from './http.js';

export { request, type ApiResponse };

export interface TestServer {
  server: RunningServer;
  db: TestDatabase;
  url: string;
  adminToken: string;
  /** fetch against the server with the admin token (or `token`), JSON in and out. */
  api(method: string, path: string, body?: unknown, token?: string | null): Promise<ApiResponse>;
  stop(): Promise<void>;
}

/** Builds a config for tests and benchmarks: loopback, random ports, folders under `db.dir`, rate limits (RATE_LIMIT, MAX_AUTH_FAILURES) off unless asked. */
export function testConfig(
  db: Pick<TestDatabase, 'url' | 'dir'>,
  overrides: Record<string, unknown> = {},
): Config {
  const r = loadConfig({
    env: {},
    flags: {
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: 0,
      WEBSOCKET_PORT: 0,
      MODEL_SERVER_PORT: 0,
      DATABASE_URL: db.url,
      DATA_DIR: join(db.dir, 'data'),
      LOG_DIR: join(db.dir, 'logs'),
      CHECKPOINT_DIR: join(db.dir, 'checkpoints'),
      MODEL_CACHE_DIR: join(db.dir, 'model_cache'),
      RATE_LIMIT: 'off',
      MAX_AUTH_FAILURES: 'off',
      LOG_LEVEL: 'debug',
      ...overrides,
    },
  });
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.config;
}

/** A real server on a fresh database of the given dialect. */
export async function startTestServer(
  dialect: Dialect,
  overrides: Record<string, unknown> = {},
): Promise<TestServer> {
  const db = await createTestDatabase(dialect);
  const adminToken = generateToken();
  const server = await startServer(testConfig(db, { ADMIN_TOKEN: adminToken, ...overrides }));
  const url = server.httpUrl;
  return {
    server,
    db,
    url,
    adminToken,
    api: (method, path, body, token) =>
      request(url, method, path, body, token === undefined ? adminToken : token),
    stop: async () => {
      await server.stop();
      await db.drop();
    },
  };
}
