import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { newToken, request, startWorkerProcess, type Json, type WorkerProcess } from './chaos.js';
import { cleanups, diagnostics } from './chaos-suite.js';
import { serverEnv, startCliServer, type CliServer } from './cli.js';
import type { TestDatabase } from './db.js';
import { waitFor } from './wait.js';

/**
 * The farm of the chaos suites' worker and database cases: real `ai-farm server` and
 * `ai-farm worker` processes, killed after each case (helpers/chaos-suite.ts).
 */

/** A running `ai-farm server` with its database, admin token and a worker token. */
export interface Farm {
  server: CliServer;
  db: TestDatabase;
  admin: string;
  workerToken: string;
  api(method: string, path: string, body?: unknown): ReturnType<typeof request>;
}

/** Starts `ai-farm server` on `db` (or `databaseUrl`), killed after the case. */
export async function startFarm(
  db: TestDatabase,
  extra: Record<string, string> = {},
  databaseUrl = db.url,
): Promise<Farm> {
  const admin = newToken();
  const server = await startCliServer([], serverEnv({ url: databaseUrl, dir: db.dir }, admin, extra));
  cleanups.push(() => server.stop('SIGKILL'));
  diagnostics.push(() => {
    let log = '';
    try {
      log = readFileSync(join(db.dir, 'logs', 'server.log'), 'utf8')
        .split('\n')
        .slice(-60)
        .join('\n');
    } catch {
      // no log
    }
    return `--- server ---\n${server.stdout()}\n${server.stderr()}\n${log}`;
  });
  const api = (method: string, path: string, body?: unknown) =>
    request(server.url, method, path, body, admin);
  const tok = await api('POST', '/api/tokens', { name: 'chaos-workers', role: 'worker' });
  expect(tok.status).toBe(201);
  return { server, db, admin, workerToken: tok.body.token as string, api };
}

/** Starts `ai-farm worker` `name` against the farm (or `serverUrl`), killed after the case. */
export function worker(farm: Farm, name: string, serverUrl = farm.server.url): WorkerProcess {
  const w = startWorkerProcess(serverUrl, farm.workerToken, name, farm.db.dir);
  cleanups.push(() => w.kill());
  diagnostics.push(() => `--- worker ${name} ---\n${w.output()}`);
  return w;
}

/** The client id a worker registered with (its id file), once it has. */
export const clientIdOf = (farm: Farm, w: WorkerProcess) =>
  waitFor(
    `${w.name} to register`,
    () => {
      try {
        return readFileSync(join(farm.db.dir, `${w.name}.id`), 'utf8').trim() || undefined;
      } catch {
        return undefined;
      }
    },
    30_000,
  );

/** A task as the API shows it. */
export async function taskOf(farm: Farm, id: number): Promise<Json> {
  const r = await farm.api('GET', `/api/tasks/${id}`);
  if (r.status !== 200) throw new Error(`GET task ${id}: ${r.status}`);
  return r.body;
}
