import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import type { Dialect } from '../../src/storage/db.js';
import { startTestServer, type ApiResponse, type TestServer } from './server.js';
import { waitFor } from './wait.js';
import { registeredClient, type RawClient } from './ws-client.js';

export function expectClose(actual: number[] | undefined, expected: number[], digits = 5): void {
  expect(actual).toHaveLength(expected.length);
  expected.forEach((v, i) => expect(actual?.[i]).toBeCloseTo(v, digits));
}

/** A server, a worker token and `n` registered clients (w0..w{n-1}). */
export interface TrainingFarm {
  ts: TestServer;
  token: string;
  clients: RawClient[];
  ids: string[];
  stop(): Promise<void>;
}

/** A training farm per test: `start` as trainingFarm, each farm stopped after its test. */
export function farmPerTest(): (...args: Parameters<typeof trainingFarm>) => Promise<TrainingFarm> {
  const started: TrainingFarm[] = [];
  afterEach(async () => {
    for (const f of started.splice(0)) await f.stop();
  });
  return async (...args) => {
    const f = await trainingFarm(...args);
    started.push(f);
    return f;
  };
}

export async function trainingFarm(
  dialect: Dialect,
  n: number,
  overrides: Record<string, unknown> = {},
): Promise<TrainingFarm> {
  const ts = await startTestServer(dialect, overrides);
  const res = await ts.api('POST', '/api/tokens', { name: `workers-${Date.now()}`, role: 'worker' });
  expect(res.status).toBe(201);
  const token = res.body.token as string;
  const ids = Array.from({ length: n }, (_, i) => `w${i}-${Math.random().toString(36).slice(2, 8)}`);
  const clients: RawClient[] = [];
  for (const id of ids) clients.push(await registeredClient(ts.server.wsUrl, token, id, { max_tasks: 1 }));
  return {
    ts,
    token,
    clients,
    ids,
    stop: async () => {
      for (const c of clients) c.close();
      await ts.stop();
    },
  };
}

export interface Upload {
  base: string;
  token: string;
  clientId: string;
  taskId: number;
  round: number;
  rank: number;
  attempt: number;
  numSamples: number;
  body: Uint8Array;
  metrics?: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** PUTs an update; returns status and parsed body. */
export async function upload(
  u: Upload, // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
): Promise<{ status: number; body: any }> {
  const url = `${u.base}/api/tasks/${u.taskId}/rounds/${u.round}/updates/${u.rank}?attempt=${u.attempt}&num_samples=${u.numSamples}`;
  const res = await fetch(url, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${u.token}`,
      'content-type': 'application/octet-stream',
      'x-ai-farm-client': u.clientId,
      ...(u.metrics ? { 'x-ai-farm-metrics': JSON.stringify(u.metrics) } : {}),
      ...u.headers,
    },
    body: u.body,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** GETs a model with a token; returns status, headers and bytes. */
export async function download(
  base: string,
  path: string,
  token: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; bytes: Buffer }> {
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${token}`, ...headers } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** The `task` message a client got, with its training state. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
export async function taskMessage(c: RawClient, taskId: number): Promise<any> {
  const m = await c.next((x) => x.type === 'task' && (x.data as { id: number }).id === taskId, 15_000);
  return m.data;
}

/** A rank as its client got it: the client, the attempt and the whole `task` message. */
export interface RankLease {
  clientId: string;
  client: RawClient;
  rank: number;
  attempt: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the task message's JSON
  message: any;
}

/** A training task started on a farm, each rank placed. */
export interface Training {
  taskId: number;
  /** The task as POST /api/tasks answered it. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the API's JSON
  created: any;
  /** The ranks in the order of the farm's clients that got one. */
  ranks: RankLease[];
  rank(r: number): RankLease;
  /** PUTs rank `r`'s update: round 1 and 1 sample unless told, as the client holding `r`. */
  put(r: number, body: Uint8Array, over?: Partial<Upload>): ReturnType<typeof upload>;
}

/** POSTs a training task (`world_size` only when given) and expects it created: the 201 answer. */
export async function createTrainingTask(
  ts: TestServer,
  config: Record<string, unknown>,
  { worldSize, type = 'command' }: { worldSize?: number | undefined; type?: string } = {},
): Promise<ApiResponse> {
  const body = {
    type,
    requirements: {},
    ...(worldSize === undefined ? {} : { world_size: worldSize }),
    config,
  };
  const created = await ts.api('POST', '/api/tasks', body);
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created;
}

/**
 * Creates a training task of `worldSize` ranks (the farm's clients unless told) and waits
 * for the `task` message of each placed rank. With fewer ranks than clients, the clients
 * are the ones the task's assignments name.
 */
export async function startTraining(
  farm: TrainingFarm,
  config: Record<string, unknown>,
  { worldSize = farm.clients.length, type = 'command' }: { worldSize?: number; type?: string } = {},
): Promise<Training> {
  const created = await createTrainingTask(farm.ts, config, { worldSize, type });
  const taskId = created.body.id as number;
  let holders = farm.ids;
  if (worldSize < farm.clients.length) {
    const assigned = await waitFor(
      `the ${worldSize} ranks of task ${taskId} placed`,
      async () => {
        const items = (await farm.ts.api('GET', `/api/tasks/${taskId}/assignments`)).body.items;
        return items.length >= worldSize && (items as { client_id: string }[]);
      },
      15_000,
      { everyMs: 50 },
    );
    holders = assigned.map((a) => a.client_id);
  }
  const ranks = await Promise.all(
    holders.map(async (clientId) => {
      const client = farm.clients[farm.ids.indexOf(clientId)]!;
      const message = await taskMessage(client, taskId);
      return { clientId, client, rank: message.rank as number, attempt: message.attempt as number, message };
    }),
  );
  const rank = (r: number) => {
    const found = ranks.find((x) => x.rank === r);
    if (!found) throw new Error(`task ${taskId} has no rank ${r}`);
    return found;
  };
  return {
    taskId,
    created: created.body,
    ranks,
    rank,
    put: (r, body, over = {}) =>
      upload({
        base: farm.ts.url,
        token: farm.token,
        clientId: rank(r).clientId,
        taskId,
        round: 1,
        rank: r,
        attempt: rank(r).attempt,
        numSamples: 1,
        body,
        ...over,
      }),
  };
}

/** `ai-farm worker` arguments for one named worker of a test, its id kept in `dir`; `more` appended. */
export function workerArgs(server: string, dir: string, name: string, more: string[] = []): string[] {
  return [
    'worker',
    '--server',
    server,
    '--id-file',
    join(dir, `${name}.id`),
    '--name',
    name,
    '--max-tasks',
    '1',
    '-v',
    ...more,
  ];
}

/** The POST /api/tasks body of a `train_mnist` task (batch 32, seed 1 unless `config` says otherwise). */
export function mnistTaskBody(name: string, worldSize: number, config: Record<string, unknown>) {
  return {
    type: 'train_mnist',
    name,
    world_size: worldSize,
    requirements: {},
    config: { batch_size: 32, seed: 1, ...config },
  };
}

/** Statuses a task does not leave. */
export const ENDED = ['completed', 'failed', 'error', 'cancelled'];
