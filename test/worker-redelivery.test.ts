import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LineDisplay } from '../src/worker/display.js';
import { Worker } from '../src/worker/worker.js';
import { sleep, waitFor } from './helpers/wait.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';

// A worker whose result is lost on the way (network cut after the command ended) gets
// its live assignment sent again when it reconnects. It must deliver the result it
// still holds, not run the command a second time.

let ts: TestServer;
let proxy: TcpProxy;
let dir: string;
let token: string;

// Appends "start" when launched; waits for GO_FILE; appends "end"; reports a result.
const SCRIPT = `
import { appendFileSync, existsSync } from 'node:fs';
const env = process.env;
appendFileSync(env.RUNS_FILE, 'start\\n');
const t = setInterval(() => {
  if (!existsSync(env.GO_FILE)) return;
  clearInterval(t);
  appendFileSync(env.RUNS_FILE, 'end\\n');
  console.log(JSON.stringify({ result: { ok: true } }));
}, 20);
`;

beforeAll(async () => {
  // Long enough that the lease outlives the cut: the server keeps the assignment.
  ts = await startTestServer('sqlite', { CONNECTION_TIMEOUT: 120 });
  const port = Number(new URL(ts.server.wsUrl).port);
  proxy = await startTcpProxy('127.0.0.1', port);
  dir = mkdtempSync(join(tmpdir(), 'aifarm-redeliver-'));
  writeFileSync(join(dir, 'script.mjs'), SCRIPT);
  const res = await ts.api('POST', '/api/tokens', { name: 'redeliver', role: 'worker' });
  expect(res.status).toBe(201);
  token = res.body.token;
});

afterAll(async () => {
  await proxy?.close();
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a result lost with the connection', () => {
  it('is delivered again after the reconnection, and the command does not run twice', async () => {
    const lines: string[] = [];
    const worker = new Worker({
      wsUrl: `ws://127.0.0.1:${proxy.port}`,
      httpUrl: ts.url,
      token,
      display: new LineDisplay(false, (l) => lines.push(l)),
    });
    const runs = join(dir, 'runs.txt');
    const go = join(dir, 'go');
    try {
      await worker.start();
      const created = await ts.api('POST', '/api/tasks', {
        type: 'command',
        requirements: {},
        config: { command: ['node', join(dir, 'script.mjs')], env: { RUNS_FILE: runs, GO_FILE: go } },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const id = created.body.id as number;
      await waitFor(
        'the command to start',
        () => existsSync(runs) && readFileSync(runs, 'utf8').includes('start'),
      );

      // Nothing gets through from now on; the command ends and its result is sent into the void.
      proxy.freeze();
      writeFileSync(go, '');
      await waitFor('the command to end', () => readFileSync(runs, 'utf8').includes('end'));
      await waitFor('the worker to report the result', () =>
        lines.some((l) => l.includes(`task ${id}: completed`)),
      );
      await sleep(300);
      expect((await ts.api('GET', `/api/tasks/${id}`)).body.status).toBe('running');

      // The connection drops; the worker reconnects, the server sends the live assignment again.
      proxy.thaw();
      const done = await waitFor(
        'the task to complete',
        async () => {
          const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
          return t.status === 'completed' && t;
        },
        60_000,
      );
      expect(done).toMatchObject({ attempts: 1, result: { ok: true } });
      // Give a wrongly restarted command time to show itself.
      await sleep(1000);
      expect(readFileSync(runs, 'utf8').trim().split('\n')).toEqual(['start', 'end']);
    } finally {
      await worker.shutdown();
    }
  }, 120_000);
});
