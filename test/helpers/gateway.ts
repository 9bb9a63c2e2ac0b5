import { afterAll, beforeAll, expect } from 'vitest';
import type { Dialect } from '../../src/storage/db.js';
import { startTestServer, type TestServer } from './server.js';
import { registeredClient, type RawClient } from './ws-client.js';

/** The worker gateway suites' server and its two worker tokens. */
export interface GatewayServer {
  t: TestServer;
  workerToken: string;
  otherWorkerToken: string;
}

/**
 * The server of one worker gateway describe block on `dialect` (CONNECTION_TIMEOUT 1.5 s,
 * MAX_CLIENTS 20, two tasks per client), with two worker tokens: started before the first
 * test and handed to `started`, stopped after the last with every client in `clients`.
 * `connect` registers a client (kept in `clients`), `createTask` makes a command task (201),
 * `task` reads one.
 */
export function gatewayPerDescribe(dialect: Dialect, started: (s: GatewayServer) => void) {
  let s: GatewayServer | undefined;
  const clients: RawClient[] = [];
  const running = () => {
    if (!s) throw new Error('the server starts before the first test');
    return s;
  };
  beforeAll(async () => {
    const t = await startTestServer(dialect, {
      CONNECTION_TIMEOUT: 1.5,
      MAX_CLIENTS: 20,
      MAX_TASKS_PER_CLIENT: 2,
    });
    const workerToken = (await t.api('POST', '/api/tokens', { name: 'workers', role: 'worker' })).body.token;
    const otherWorkerToken = (await t.api('POST', '/api/tokens', { name: 'other', role: 'worker' })).body
      .token;
    s = { t, workerToken, otherWorkerToken };
    started(s);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await s?.t.stop();
  });
  const connect = async (
    id: string,
    over: Parameters<typeof registeredClient>[3] = {},
    token = running().workerToken,
  ) => {
    const c = await registeredClient(running().t.server.wsUrl, token, id, over);
    clients.push(c);
    return c;
  };
  const createTask = async (body: Record<string, unknown> = {}) => {
    const r = await running().t.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      config: { command: 'true' },
      ...body,
    });
    expect(r.status).toBe(201);
    return r.body as { id: number };
  };
  const task = async (id: number) => (await running().t.api('GET', `/api/tasks/${id}`)).body;
  return { clients, connect, createTask, task };
}
