import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { alive, CliProcess } from './clients/processes.js';
import { holdsStill, waitFor } from './helpers/wait.js';

// End to end: a real server, real `ai-farm worker` processes, real commands.

const SCRIPT = join(import.meta.dirname, 'clients', 'task-script.mjs');

let ts: TestServer;
let dir: string;
let workerToken: string;
let procs: CliProcess[] = [];

beforeAll(async () => {
  // A short timeout so that a killed worker's lease expires quickly.
  ts = await startTestServer('sqlite', { CONNECTION_TIMEOUT: 3 });
  dir = mkdtempSync(join(tmpdir(), 'aifarm-e2e-'));
  const res = await ts.api('POST', '/api/tokens', { name: 'e2e-workers', role: 'worker' });
  expect(res.status).toBe(201);
  workerToken = res.body.token;
});

afterEach(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  procs = [];
});

afterAll(async () => {
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface StartedWorker {
  proc: CliProcess;
  id: string;
}

/** Starts `ai-farm worker` and waits for its registration. */
async function startWorker(
  name: string,
  opts: { server?: string; extra?: string[] } = {},
): Promise<StartedWorker> {
  const proc = new CliProcess(
    [
      'worker',
      '--server',
      opts.server ?? ts.url,
      '--id-file',
      join(dir, `${name}.id`),
      '--name',
      name,
      ...(opts.extra ?? []),
    ],
    { AI_FARM_TOKEN: workerToken },
  );
  procs.push(proc);
  const m = await proc.waitFor(/registered as (\S+)/);
  return { proc, id: m[1]! };
}

async function createTask(body: Record<string, unknown>): Promise<number> {
  const res = await ts.api('POST', '/api/tasks', { requirements: {}, type: 'command', ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

const getTask = async (id: number) => (await ts.api('GET', `/api/tasks/${id}`)).body;
const status = (id: number, s: string) => ts.api('PUT', `/api/tasks/${id}/status`, { status: s });
const scriptTask = (env: Record<string, string | number>) => ({ command: ['node', SCRIPT], env });
const fileSize = (f: string) => (existsSync(f) ? statSync(f).size : 0);

describe('ai-farm worker end to end', () => {
  it('runs a command task on a worker that meets its requirements, with progress, metrics and result', async () => {
    const w = await startWorker('meets', { server: ts.server.wsUrl });
    // The id is persisted for the next start.
    expect(readFileSync(join(dir, 'meets.id'), 'utf8').trim()).toBe(w.id);

    const tooBig = await createTask({ requirements: { min_cpu_cores: 4096 }, config: { command: 'true' } });
    const id = await createTask({
      name: 'fits',
      requirements: { min_cpu_cores: cpus().length, min_ram_gb: 0.25 },
      config: scriptTask({ MODE: 'progress', STEPS: 8, STEP_MS: 100 }),
    });
    const done = await waitFor('the task to finish', async () => {
      const t = await getTask(id);
      return ['completed', 'failed', 'error'].includes(t.status) && t;
    });
    expect(done).toMatchObject({ status: 'completed', client_id: w.id, progress: 100, attempts: 1 });
    expect(done.result).toMatchObject({ steps: 8, attempt: 1, task_id: id });
    expect(done.metrics).toMatchObject({ step: 8 });
    const metrics = await ts.api('GET', `/api/tasks/${id}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.body.items.length).toBeGreaterThan(0);
    // The command's other output lines reached the server (task_log), in order, before the result.
    const logs = await ts.api('GET', `/api/tasks/${id}/logs`);
    expect(logs.body.items.map((l: { line: string }) => l.line)).toEqual(
      Array.from({ length: 8 }, (_, i) => `plain log line ${i + 1}`),
    );
    await w.proc.waitFor(new RegExp(`task ${id}: completed`));

    // No worker has 4096 cores: the task waits, and says why.
    const big = await waitFor('the task to be marked unschedulable', async () => {
      const t = await getTask(tooBig);
      return t.unschedulable_reason && t;
    });
    expect(big.status).toBe('pending');
    expect(big.client_id).toBeNull();
    await ts.api('DELETE', `/api/tasks/${tooBig}`);
  });

  it('pause freezes the command (its counter stands still), resume continues, cancel kills it', async () => {
    const w = await startWorker('pausing');
    const countFile = join(dir, 'count');
    const pidFile = join(dir, 'pause.pid');
    const id = await createTask({
      config: scriptTask({ MODE: 'counter', COUNT_FILE: countFile, PID_FILE: pidFile }),
    });
    await waitFor('counter running', () => fileSize(countFile) > 5, 20_000);

    expect((await status(id, 'paused')).body.status).toBe('paused');
    await w.proc.waitFor(new RegExp(`task ${id}: paused`));
    // The SIGSTOP lands a moment later (later on a busy machine): the counter comes to rest.
    const frozen = await holdsStill(() => fileSize(countFile), 1500, 20_000, 'the paused counter');

    expect((await status(id, 'running')).body.status).toBe('running');
    await waitFor('counter resumed', () => fileSize(countFile) > frozen + 5, 10_000);

    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(alive(pid)).toBe(true);
    expect((await status(id, 'cancelled')).body.status).toBe('cancelled');
    await waitFor('command killed', () => !alive(pid), 10_000);
    await w.proc.waitFor(new RegExp(`task ${id}: stopped by the server`));
    // The worker is free again: the next task runs.
    const next = await createTask({ config: scriptTask({ MODE: 'progress', STEPS: 2 }) });
    await waitFor('the next task to complete', async () => (await getTask(next)).status === 'completed');
  });

  it('a worker killed with SIGKILL mid-task: the task is retried on another worker', async () => {
    const a = await startWorker('kill-a');
    const b = await startWorker('kill-b');
    const pidFile = join(dir, 'attempt1.pid');
    const id = await createTask({
      config: scriptTask({ MODE: 'attempt1', PID_FILE: pidFile }),
      max_attempts: 3,
    });
    const first = await waitFor('the task to run', async () => {
      const t = await getTask(id);
      return t.status === 'running' && t.progress > 0 && t;
    });
    const [victim, survivor] = first.client_id === a.id ? [a, b] : [b, a];
    expect(first.client_id).toBe(victim.id);
    const orphan = Number(readFileSync(pidFile, 'utf8'));

    victim.proc.child.kill('SIGKILL');
    await victim.proc.exited;
    const done = await waitFor(
      'task retried',
      async () => {
        const t = await getTask(id);
        return ['completed', 'failed', 'error'].includes(t.status) && t;
      },
      30_000,
    );
    expect(done).toMatchObject({ status: 'completed', client_id: survivor.id, attempts: 2 });
    expect(done.result).toMatchObject({ attempt: 2 });
    // The killed worker's command prints progress: with its reader gone it dies on EPIPE.
    await waitFor('orphaned command gone', () => !alive(orphan), 10_000);
  });

  it('SIGTERM stops the running command and exits 0; the work goes to another worker', async () => {
    const a = await startWorker('term-a');
    const pidFile = join(dir, 'term.pid');
    const id = await createTask({ config: scriptTask({ MODE: 'attempt1', PID_FILE: pidFile }) });
    await waitFor('the task to report progress', async () => (await getTask(id)).progress > 0);
    const pid = Number(readFileSync(pidFile, 'utf8'));

    a.proc.child.kill('SIGTERM');
    expect(await a.proc.exited).toEqual({ code: 0, signal: null });
    expect(alive(pid)).toBe(false);
    expect(a.proc.output).toMatch(/shutting down: stopping 1 task/);

    const b = await startWorker('term-b');
    const done = await waitFor(
      'the task to complete on the other worker',
      async () => (await getTask(id)).status === 'completed' && getTask(id),
      30_000,
    );
    expect(done).toMatchObject({ client_id: b.id, attempts: 2 });
  });

  it('keeps its id across restarts, refuses a second worker on the same id file and a bad token', async () => {
    const first = await startWorker('same');
    const twin = new CliProcess(['worker', '--server', ts.url, '--id-file', join(dir, 'same.id')], {
      AI_FARM_TOKEN: workerToken,
    });
    procs.push(twin);
    expect((await twin.exited).code).toBe(1);
    expect(twin.output).toMatch(/another worker \(pid \d+\) uses/);

    await first.proc.stop();
    const again = await startWorker('same');
    expect(again.id).toBe(first.id);

    const bad = new CliProcess([
      'worker',
      '--server',
      ts.url,
      '--token',
      'nope',
      '--id-file',
      join(dir, 'bad.id'),
    ]);
    procs.push(bad);
    expect((await bad.exited).code).toBe(1);
    expect(bad.output).toMatch(/refused the token/);
  });
});
