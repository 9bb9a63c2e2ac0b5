import { expect } from 'vitest';
import { encodeSafetensors, type TensorData } from '../../src/training/safetensors/encode.js';
import { readTensorsF32 } from '../../src/training/safetensors/read.js';
import type { Dialect } from '../../src/storage/db.js';
import { startTestServer, type TestServer } from './server.js';
import { registeredClient, type RawClient } from './ws-client.js';

/** A small model: tensors "a" [4] and "b" [2, 2], F32 unless told. */
export function model(a: number[], b: number[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): Buffer {
  const tensors: TensorData[] = [
    { name: 'a', dtype, shape: [4], data: Float32Array.from(a) },
    { name: 'b', dtype, shape: [2, 2], data: Float32Array.from(b) },
  ];
  return encodeSafetensors(tensors);
}

/** The values of a safetensors file as plain arrays, by tensor name. */
export async function values(buf: Uint8Array): Promise<Record<string, number[]>> {
  const r = await readTensorsF32(buf);
  if (!r.ok) throw new Error(r.message);
  const out: Record<string, number[]> = {};
  for (const [name, t] of r.tensors) out[name] = [...t.data];
  return out;
}

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
