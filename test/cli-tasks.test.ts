import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { CliProcess, runCli } from './clients/processes.js';
import { freePort } from './helpers/ports.js';

// `ai-farm tasks ...` as users run it (bin/ai-farm.js), against a real server and worker.

let ts: TestServer;
let env: Record<string, string>;
let dir: string;

beforeAll(async () => {
  ts = await startTestServer('sqlite');
  env = { AI_FARM_SERVER: ts.url, AI_FARM_TOKEN: ts.adminToken };
  dir = mkdtempSync(join(tmpdir(), 'aifarm-cli-'));
});
afterAll(async () => {
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const json = async (args: string[]) => {
  const r = await runCli([...args, '--json'], env);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
};

describe('ai-farm tasks', () => {
  it('create --json builds the body from the sugar flags', async () => {
    const t = await json([
      'tasks',
      'create',
      '--command',
      'echo hi',
      '--name',
      'sugar',
      '--priority',
      '5',
      '--min-cpu-cores',
      '4096',
      '--min-ram-gb',
      '1.5',
      '--gpus',
      '0',
      '--config',
      '{"epochs": 3}',
    ]);
    expect(t).toMatchObject({
      type: 'command',
      name: 'sugar',
      priority: 5,
      status: 'pending',
      config: { epochs: 3, command: 'echo hi' },
      requirements: { min_cpu_cores: 4096, min_ram_gb: 1.5, gpu_count: 0 },
    });

    const other = await json([
      'tasks',
      'create',
      '--type',
      'train_mnist',
      '--requirements',
      '{"min_ram_gb": 4096}',
    ]);
    expect(other).toMatchObject({ type: 'train_mnist', requirements: { min_ram_gb: 4096 } });

    const [list, human, shown] = await Promise.all([
      json(['tasks', 'list', '--status', 'pending']),
      runCli(['tasks', 'list'], env),
      json(['tasks', 'show', String(t.id)]),
    ]);
    expect(list.items.map((x: { id: number }) => x.id)).toEqual(expect.arrayContaining([t.id, other.id]));
    expect(human.stdout).toContain(`#${t.id} sugar [command] pending`);
    expect(shown).toMatchObject({ id: t.id, events: expect.any(Array) });
  });

  it('pause, resume and cancel change the status; watch exits 1 for a cancelled task', async () => {
    const t = await json(['tasks', 'create', '--command', 'true', '--min-cpu-cores', '4096']);
    expect(await json(['tasks', 'pause', String(t.id)])).toMatchObject({ status: 'paused' });
    // Nothing runs it: resuming puts it back in the queue.
    expect(await json(['tasks', 'resume', String(t.id)])).toMatchObject({ status: 'pending' });
    expect(await json(['tasks', 'cancel', String(t.id)])).toMatchObject({ status: 'cancelled' });
    const watched = await runCli(['tasks', 'watch', String(t.id), '--json'], env);
    expect(watched.code).toBe(1);
    expect(JSON.parse(watched.stdout)).toMatchObject({ id: t.id, status: 'cancelled' });
  });

  it('create --watch follows a task a real worker runs, and exits 0 when it completes', async () => {
    const workerToken = (await ts.api('POST', '/api/tokens', { name: 'cli-worker', role: 'worker' })).body
      .token;
    const worker = new CliProcess(['worker', '--server', ts.url, '--id-file', join(dir, 'w.id')], {
      AI_FARM_TOKEN: workerToken,
    });
    try {
      await worker.waitFor(/registered as/);
      const script = 'for i in 1 2 3 4; do echo "{\\"progress\\": $((i*25))}"; sleep 0.2; done';
      const r = await runCli(['tasks', 'create', '--command', script, '--watch', '--interval', '200'], env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/created task (\d+)/);
      expect(r.stdout).toMatch(/completed 100\.0%/);

      const id = Number(/created task (\d+)/.exec(r.stdout)![1]);
      const final = await runCli(['tasks', 'watch', String(id), '--json'], env);
      expect(final.code).toBe(0);
      expect(JSON.parse(final.stdout)).toMatchObject({ id, status: 'completed', progress: 100 });
    } finally {
      await worker.stop();
    }
  });

  it('reports API errors with their code, and usage errors with exit code 2', async () => {
    const port = await freePort();
    // Independent runs, in parallel: each CLI start costs about a second.
    const [missing, badToken, asJson, invalid, notInt, noServer, badJson, noType, down] = await Promise.all([
      runCli(['tasks', 'show', '999999'], env),
      runCli(['tasks', 'list', '--token', 'nope'], env),
      runCli(['tasks', 'show', '999999', '--json'], env),
      // The API's own validation (priority is at most 1 000 000), passed through.
      runCli(['tasks', 'create', '--type', 'command', '--priority', '99999999'], env),
      runCli(['tasks', 'create', '--type', 'command', '--priority', 'high'], env),
      runCli(['tasks', 'list'], { AI_FARM_TOKEN: 'x' }),
      runCli(['tasks', 'create', '--config', '{nope'], env),
      runCli(['tasks', 'create', '--name', 'no-type'], env),
      runCli(['tasks', 'list', '--server', `http://127.0.0.1:${port}`], env),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/task_not_found/);
    expect(badToken.code).toBe(1);
    expect(badToken.stderr).toMatch(/unauthorized/);
    expect(JSON.parse(asJson.stderr)).toMatchObject({ error: { code: 'task_not_found' } });
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/^error: \w+: .*priority/);
    expect([notInt.code, noServer.code, badJson.code, noType.code]).toEqual([2, 2, 2, 2]);
    expect(noServer.stderr).toMatch(/AI_FARM_SERVER/);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/unreachable: cannot reach .*ECONNREFUSED/);
  });
});
