import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TaskData } from '../src/api/protocol.js';
import { CommandExecutor } from '../src/worker/executors/command.js';
import type { ExecutionOutcome } from '../src/worker/executors/types.js';
import { alive } from './clients/processes.js';
import { sleep, waitFor } from './helpers/wait.js';

// Real child processes throughout: these tests prove what the signals really do.

const dir = mkdtempSync(join(tmpdir(), 'aifarm-exec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const task = (config: Record<string, unknown>, over: Partial<TaskData> = {}): TaskData => ({
  id: 7,
  type: 'command',
  name: 'unit',
  config,
  requirements: {},
  attempt: 2,
  rank: 0,
  world_size: 1,
  ...over,
});

/** Starts a task and records what the executor reports. */
function run(config: Record<string, unknown>, opts: { stopGraceMs?: number } = {}) {
  const progress: { progress: number; metrics?: Record<string, unknown> | undefined }[] = [];
  const output: string[] = [];
  const execution = new CommandExecutor({ stopGraceMs: opts.stopGraceMs ?? 5000 }).start({
    task: task(config),
    serverUrl: 'http://farm.example:8000',
    onProgress: (p, metrics) => progress.push({ progress: p, metrics }),
    onOutput: (line) => output.push(line),
  });
  return { execution, progress, output };
}

/** A node program printing an increasing counter every 20 ms, forever. */
const COUNTER = ['node', '-e', 'let i = 0; setInterval(() => console.log(`tick ${i++}`), 20);'];
const ticks = (output: string[]) => output.filter((l) => l.startsWith('tick ')).length;

describe('command executor', () => {
  it('turns JSON lines into progress and a result, keeps other lines as output, completes on exit 0', async () => {
    const script = [
      'echo \'{"progress": 10, "metrics": {"loss": 1.5}}\'',
      'echo hello world',
      'echo \'{"progress": 150}\'',
      'echo \'{"not": "progress"}\'',
      'echo \'{"result": {"accuracy": 0.9}, "metrics": {"loss": 0.2}}\'',
    ].join('; ');
    const { execution, progress, output } = run({ command: script });
    const outcome = await execution.done;
    expect(outcome.status).toBe('completed');
    expect(outcome.result).toEqual({ accuracy: 0.9 });
    expect(outcome.metrics).toEqual({ loss: 0.2 });
    // 150 is clamped to 100.
    expect(progress).toEqual([
      { progress: 10, metrics: { loss: 1.5 } },
      { progress: 100, metrics: undefined },
    ]);
    expect(output).toEqual(['hello world', '{"not": "progress"}']);
  });

  it('fails on a non-zero exit with the tail of stderr as error_log', async () => {
    // 10 000 bytes of stderr, then a marker: only the last ~4 KB is kept.
    const script = "head -c 10000 /dev/zero | tr '\\0' x >&2; echo >&2; echo the-end >&2; exit 3";
    const outcome = await run({ command: script }).execution.done;
    expect(outcome.status).toBe('failed');
    expect(outcome.error_log).toMatch(/^command exited with code 3\n/);
    expect(outcome.error_log).toContain('the-end');
    expect(outcome.error_log!.length).toBeLessThan(4200);
  });

  it('runs an array without a shell and gives the task its environment', async () => {
    const print =
      'const e = process.env; console.log(JSON.stringify({ result: { cwd: process.cwd(), arg: process.argv[1], ' +
      'id: e.AI_FARM_TASK_ID, attempt: e.AI_FARM_ATTEMPT, rank: e.AI_FARM_RANK, ws: e.AI_FARM_WORLD_SIZE, ' +
      'server: e.AI_FARM_SERVER, config: JSON.parse(e.AI_FARM_TASK_CONFIG), batch: e.AI_FARM_BATCH_SIZE, ' +
      'epochs: e.AI_FARM_EPOCHS, mine: e.MY_VAR, token: e.AI_FARM_TOKEN ?? null } }))';
    process.env.AI_FARM_TOKEN = 'worker-secret';
    try {
      const config = {
        command: ['node', '-e', print, '$HOME and spaces'],
        env: { MY_VAR: 42 },
        cwd: dir,
        batch_size: 64,
        epochs: 3,
      };
      const outcome = await run(config).execution.done;
      expect(outcome.status).toBe('completed');
      expect(outcome.result).toEqual({
        cwd: dir,
        arg: '$HOME and spaces',
        id: '7',
        attempt: '2',
        rank: '0',
        ws: '1',
        server: 'http://farm.example:8000',
        config,
        batch: '64',
        epochs: '3',
        mine: '42',
        token: null,
      });
    } finally {
      delete process.env.AI_FARM_TOKEN;
    }
  });

  it('pause stops the whole process group (the counter stands still) and resume continues it', async () => {
    // The counter runs as a grandchild under sh: only a group-wide SIGSTOP reaches it.
    const { execution, output } = run({ command: `${COUNTER.slice(0, 2).join(' ')} '${COUNTER[2]}' & wait` });
    await waitFor('5 ticks', () => ticks(output) >= 5, 5000, { everyMs: 20 });
    execution.pause();
    await sleep(150); // lines already in the pipe drain
    const frozen = ticks(output);
    await sleep(600);
    expect(ticks(output)).toBe(frozen);
    execution.resume();
    await waitFor('5 more ticks', () => ticks(output) >= frozen + 5, 5000, { everyMs: 20 });
    const outcome = await execution.stop();
    expect(outcome).toMatchObject({ status: 'failed', stopped: true });
  });

  it('stop sends SIGTERM to the whole group, then SIGKILL to what ignores it', async () => {
    // Both shells ignore SIGTERM; the grandchild prints its pid. Only SIGKILL ends them.
    const script = `trap "" TERM; sh -c 'echo pid $$; while :; do sleep 0.05; done' & wait`;
    const { execution, output } = run({ command: script }, { stopGraceMs: 300 });
    await waitFor('the pid line', () => output.some((l) => l.startsWith('pid ')), 5000, { everyMs: 20 });
    const pid = Number(output.find((l) => l.startsWith('pid '))!.slice(4));
    expect(alive(pid)).toBe(true);
    const started = Date.now();
    const outcome = await execution.stop();
    expect(outcome).toMatchObject({ status: 'failed', stopped: true, error_log: 'stopped by request' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await waitFor('the command to be killed', () => !alive(pid), 5000, { everyMs: 20 });
  });

  it('stop works on a paused task and stop(0) kills at once', async () => {
    const { execution, output } = run({ command: COUNTER }, { stopGraceMs: 60_000 });
    await waitFor('2 ticks', () => ticks(output) >= 2, 5000, { everyMs: 20 });
    execution.pause();
    const outcome: ExecutionOutcome = await Promise.race([
      execution.stop(0),
      sleep(5000).then(() => ({ status: 'error' as const, error_log: 'hung' })),
    ]);
    expect(outcome).toMatchObject({ status: 'failed', stopped: true });
  });

  it('config.timeout_s ends a command that runs too long', async () => {
    const outcome = await run({ command: 'echo working >&2; sleep 30', timeout_s: 0.3 }, { stopGraceMs: 200 })
      .execution.done;
    expect(outcome.status).toBe('failed');
    expect(outcome.error_log).toMatch(/^timed out after 0.3 s/);
    expect(outcome.error_log).toContain('working');
  });

  it('kills what a finished command left running in its group', async () => {
    const { execution, output } = run({ command: 'sleep 30 & echo pid $!' });
    const outcome = await execution.done;
    expect(outcome.status).toBe('completed');
    const pid = Number(output.find((l) => l.startsWith('pid '))!.slice(4));
    await waitFor('the command to be killed', () => !alive(pid), 5000, { everyMs: 20 });
  });

  it('reports bad configuration as status error without running anything', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{}, /config.command must be/],
      [{ command: [] }, /config.command must be/],
      [{ command: 'true', env: { A: { nested: 1 } } }, /config.env.A/],
      [{ command: 'true', cwd: join(dir, 'missing') }, /does not exist/],
      [{ command: 'true', timeout_s: -1 }, /timeout_s/],
      [{ command: ['/no/such/program'] }, /cannot start \/no\/such\/program/],
    ];
    for (const [config, message] of cases) {
      const outcome = await run(config).execution.done;
      expect(outcome.status, JSON.stringify(config)).toBe('error');
      expect(outcome.error_log).toMatch(message);
    }
  });

  it('a command that is not found by the shell fails with its message', async () => {
    const outcome = await run({ command: 'no-such-command-aifarm' }).execution.done;
    expect(outcome.status).toBe('failed');
    expect(outcome.error_log).toMatch(/code 127[\s\S]*not found/);
  });
});
