import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { RunningServer } from '../main.js';
import { ApiClient } from '../api/api-client.js';
import { BarsDisplay, LinesDisplay, type DemoDisplay, type DemoSnapshot } from './demo-display.js';
import { factor, positiveInt } from './worker-command.js';

function count(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n))
    throw new InvalidArgumentError('expected an integer >= 0');
  return n;
}

function accuracyOption(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n > 0 && n <= 1))
    throw new InvalidArgumentError('expected an accuracy in (0, 1]');
  return n;
}

interface DemoFlags {
  exit?: boolean;
  dataDir?: string;
  host: string;
  port: string;
  wsPort: string;
  modelPort: string;
  workers: number;
  rounds: number;
  epochs: number;
  batchSize: number;
  timeout: number;
  progress?: boolean;
  stragglers: number;
  slowdown: number;
  target: number;
  json?: boolean;
  mode: 'sync' | 'async';
}

/** What `--json` prints as the last line (docs/benchmarks.md compares runs by it). */
interface DemoSummary {
  mode: 'sync' | 'async';
  status: string;
  task_id: number | null;
  workers: number;
  stragglers: number;
  slowdown: number;
  rounds: number;
  /** Held-out accuracy of the final model; null when there is none. */
  accuracy: number | null;
  /** Wall time of the whole demo, seconds. */
  seconds: number;
  target: number;
  /** Seconds from the task's creation to the close of the first round whose held-out accuracy reached the target. */
  time_to_target_s: number | null;
  target_round: number | null;
}
const BIN = fileURLToPath(new URL('../../bin/ai-farm.js', import.meta.url));
const FINAL = new Set(['completed', 'failed', 'cancelled', 'error']);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * `ai-farm demo`: a server on SQLite in a fresh data directory, a worker token, local
 * `ai-farm worker` processes, and a FedAvg `train_mnist` task across them, shown as it
 * trains; then the final model's held-out accuracy, its path and the admin panel's login.
 * The server keeps running for the panel until Ctrl-C, unless --exit (or --json).
 * `--stragglers N --slowdown X` make the last N workers train X times slower; `--target ACC`
 * reports when the held-out accuracy first reached ACC, counted from the task's creation.
 * Exit code 0 when the task completed at >= --target held-out accuracy, 1 otherwise, 2 on bad flags.
 */
export function demoCommand(program: Command, setExit: (code: number) => void): void {
  program
    .command('demo')
    .description('train a digit classifier on three local workers, end to end, and show the admin panel')
    .option('--exit', 'stop the server and workers when training is over (default: run until Ctrl-C)')
    .option(
      '--data-dir <dir>',
      'where the demo keeps its database, logs and models (empty or new; default: a fresh temporary folder)',
    )
    .option('--host <host>', 'address the server listens on', '127.0.0.1')
    .option('-p, --port <port>', 'HTTP port: API and admin panel (0: any free port)', '0')
    .option('--ws-port <port>', 'WebSocket port for workers (0: any free port)', '0')
    .option('--model-port <port>', 'model server port (0: any free port)', '0')
    .option('--workers <n>', 'local workers, one rank each', positiveInt, 3)
    .option('--rounds <n>', 'FedAvg rounds', positiveInt, 5)
    .option('--epochs <n>', 'local epochs per round', positiveInt, 1)
    .option('--batch-size <n>', 'mini-batch size', positiveInt, 32)
    .option('--timeout <s>', 'give up when training takes longer, seconds', positiveInt, 600)
    .option('--stragglers <n>', 'how many of the workers train slower (--slowdown)', count, 0)
    .option('--slowdown <x>', 'the stragglers train X times slower', factor, 4)
    .option(
      '--target <acc>',
      'held-out accuracy to reach: reports when it was first reached; exit 1 if the final model is below it',
      accuracyOption,
      0.9,
    )
    .option(
      '--json',
      'end with one line of JSON: mode, accuracy, seconds, time_to_target_s, ... (implies --exit)',
    )
    .addOption(
      new Option('--mode <mode>', 'sync rounds, or async versions (FedBuff, buffer_size ceil(workers/2))')
        .choices(['sync', 'async'])
        .default('sync'),
    )
    .option('--no-progress', 'plain lines even on a terminal')
    .action(async (flags: DemoFlags) => {
      if (flags.stragglers > flags.workers) {
        console.error(`error: --stragglers (${flags.stragglers}) is more than --workers (${flags.workers})`);
        return setExit(2);
      }
      setExit(await runDemo(flags));
    });
}

async function runDemo(flags: DemoFlags): Promise<number> {
  const t0 = Date.now();
  const summary: DemoSummary = {
    mode: flags.mode,
    status: 'not started',
    task_id: null,
    workers: flags.workers,
    stragglers: flags.stragglers,
    slowdown: flags.stragglers > 0 ? flags.slowdown : 1,
    rounds: flags.rounds,
    accuracy: null,
    seconds: 0,
    target: flags.target,
    time_to_target_s: null,
    target_round: null,
  };
  const code = await demo(flags, summary);
  if (flags.json) {
    summary.seconds = Math.round((Date.now() - t0) / 100) / 10;
    console.log(JSON.stringify(summary));
  }
  return code;
}

async function demo(flags: DemoFlags, summary: DemoSummary): Promise<number> {
  const t0 = Date.now();
  const exitWhenDone = flags.exit === true || flags.json === true;
  const dir = await dataDir(flags.dataDir);
  if (typeof dir !== 'string') {
    console.error(`error: ${dir.error}`);
    return 2;
  }
  // Loaded on use, like `ai-farm server`: other commands should not pay for the server at start-up.
  const [{ startServer }, { generateToken }, { evaluate }] = await Promise.all([
    import('../main.js'),
    import('../auth/token-service.js'),
    import('../mnist/index.js'),
  ]);
  const adminToken = generateToken();
  const cfg = loadConfig({
    env: {},
    flags: {
      SERVER_HOST: flags.host,
      SERVER_PORT: flags.port,
      WEBSOCKET_PORT: flags.wsPort,
      MODEL_SERVER_PORT: flags.modelPort,
      DATA_DIR: dir,
      LOG_DIR: join(dir, 'logs'),
      CHECKPOINT_DIR: join(dir, 'checkpoints'),
      MODEL_CACHE_DIR: join(dir, 'model_cache'),
      ADMIN_TOKEN: adminToken,
      // Local only: the demo, its workers and the panel all come from 127.0.0.1.
      RATE_LIMIT: 'off',
    },
  });
  if (!cfg.ok) {
    console.error(`error: ${cfg.errors.join('; ')}`);
    return 2;
  }
  const tty = process.stdout.isTTY && flags.progress !== false;
  const display: DemoDisplay = tty ? new BarsDisplay() : new LinesDisplay();
  const say = (s: string) => display.line(s);

  let server: RunningServer | undefined;
  const workers: ChildProcess[] = [];
  let interrupted = false;
  let wakeInterrupt: () => void = () => undefined;
  const interruptedP = new Promise<void>((r) => (wakeInterrupt = r));
  const onSignal = () => {
    interrupted = true;
    wakeInterrupt();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    say(`AI Farm demo: data directory ${dir}`);
    server = await startServer(cfg.config, { console: 'off' });
    const api = new ApiClient({ baseUrl: server.httpUrl, token: adminToken });
    say(`server on ${server.httpUrl} (SQLite in ${dir}; logs in ${join(dir, 'logs')})`);
    // Printed now, not only at the end, so the training can be followed live in the panel.
    say(
      `follow it live in the admin panel: ${server.httpUrl}/  user "${cfg.config.ADMIN_USERNAME}", ` +
        `password ${server.createdAdminPassword ?? '(set before)'}`,
    );

    const { token } = await api.call<{ token: string }>('POST', '/api/tokens', {
      name: 'demo-workers',
      role: 'worker',
    });
    // The last --stragglers workers are the slow ones.
    const slowFrom = flags.workers - flags.stragglers;
    for (let i = 0; i < flags.workers; i++) {
      workers.push(startWorker(i, server.httpUrl, token, dir, i >= slowFrom ? flags.slowdown : 1));
    }
    say(`started ${flags.workers} workers (ai-farm worker --max-tasks 1; logs in ${join(dir, 'logs')})`);
    if (flags.stragglers > 0) {
      say(
        `${flags.stragglers} of them train ${flags.slowdown}x slower (ai-farm worker --slowdown ${flags.slowdown})`,
      );
    }

    const task = await api.tasks.create({
      type: 'train_mnist',
      name: `demo: MNIST digits, ${flags.workers} ranks, FedAvg${flags.mode === 'async' ? ' async' : ''}${flags.stragglers > 0 ? `, ${flags.stragglers} straggler(s) x${flags.slowdown}` : ''}`,
      world_size: flags.workers,
      requirements: {},
      config: {
        rounds: flags.rounds,
        epochs: flags.epochs,
        batch_size: flags.batchSize,
        aggregation: { strategy: 'fedavg' },
        seed: 1,
        ...(flags.mode === 'async' ? { mode: 'async', buffer_size: Math.ceil(flags.workers / 2) } : {}),
      },
    });
    summary.task_id = task.id;
    summary.status = task.status;
    say(
      `submitted task ${task.id}: ${flags.rounds} rounds x ${flags.epochs} epoch(s), batch ${flags.batchSize}`,
    );

    const end = Date.now() + flags.timeout * 1000;
    let status: string = task.status;
    while (!FINAL.has(status)) {
      if (interrupted) break;
      if (Date.now() > end) {
        say(`training did not finish within ${flags.timeout} s`);
        break;
      }
      const dead = workers.find((w) => w.exitCode !== null || w.signalCode !== null);
      if (dead) say(`a worker exited (${dead.exitCode ?? dead.signalCode}); see ${join(dir, 'logs')}`);
      const snap = await snapshot(api, task.id, flags.rounds).catch(() => undefined);
      if (snap) {
        display.update(snap);
        status = snap.status;
      }
      await Promise.race([sleep(400), interruptedP]);
    }
    display.stop();
    if (interrupted) {
      console.log('interrupted: stopping the server and workers');
      return 130;
    }
    const final = await api.tasks.get(task.id);
    summary.status = final.status;
    const reached = await firstAtTarget(api, task.id, flags.target);
    if (reached) {
      summary.target_round = reached.round;
      summary.time_to_target_s = (Date.parse(reached.closedAt) - Date.parse(final.created_at)) / 1000;
    }
    if (final.status !== 'completed') {
      console.log(`task ${task.id} ended ${final.status}${final.error_log ? `: ${final.error_log}` : ''}`);
      return 1;
    }
    const modelPath = join(dir, `task-${task.id}-final-model.safetensors`);
    await download(server.httpUrl, `/api/tasks/${task.id}/model`, adminToken, modelPath);
    const ev = await evaluate(modelPath);
    if (!ev.ok) {
      console.log(`the final model cannot be evaluated: ${ev.message}`);
      return 1;
    }
    const seconds = ((Date.now() - t0) / 1000).toFixed(1);
    const trained =
      final.started_at && final.finished_at
        ? ` (training ${((Date.parse(final.finished_at) - Date.parse(final.started_at)) / 1000).toFixed(0)} s)`
        : '';
    summary.accuracy = ev.accuracy;
    const ok = ev.accuracy >= flags.target;
    const pct = (x: number) => `${Math.round(x * 10_000) / 100}%`;
    const toTarget = reached
      ? `Held-out accuracy first reached ${pct(flags.target)} in round ${reached.round}, ${summary.time_to_target_s} s after the task was created.`
      : `Held-out accuracy never reached ${pct(flags.target)}.`;
    console.log(
      [
        '',
        `Done in ${seconds} s${trained}: ${flags.rounds} rounds of FedAvg over ${flags.workers} workers.`,
        `Held-out accuracy of the final model: ${(ev.accuracy * 100).toFixed(2)}% (accuracy=${ev.accuracy.toFixed(4)}) on ${ev.count} digits the workers never saw${ok ? '' : ` - below the ${pct(flags.target)} target`}`,
        toTarget,
        `Final model (safetensors, PyTorch names): ${modelPath}`,
        `Admin panel: ${server.httpUrl}/  user "${cfg.config.ADMIN_USERNAME}", password ${server.createdAdminPassword ?? '(set before)'}`,
        `Admin API token: ${adminToken}`,
        `Rounds and metrics: curl -H "Authorization: Bearer ${adminToken}" ${server.httpUrl}/api/tasks/${task.id}/rounds`,
        '',
      ].join('\n'),
    );
    if (!exitWhenDone) {
      console.log('The server and workers keep running so you can look around; Ctrl-C stops them.');
      await interruptedP;
      console.log('stopping the server and workers');
    }
    return ok ? 0 : 1;
  } catch (err) {
    display.stop();
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(workers.map((w) => stopChild(w)));
    await server?.stop();
  }
}

/** The data directory: the one given (must be empty or new), or a fresh temporary one. */
async function dataDir(given: string | undefined): Promise<string | { error: string }> {
  if (given === undefined) return mkdtemp(join(tmpdir(), 'ai-farm-demo-'));
  const dir = resolve(given);
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    return { error: `--data-dir ${dir} is not empty: the demo needs a fresh directory` };
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Starts `ai-farm worker` as a child process, its output in logs/worker-<i>.log. */
function startWorker(i: number, server: string, token: string, dir: string, slowdown: number): ChildProcess {
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const log = openSync(join(dir, 'logs', `worker-${i}.log`), 'a');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AI_FARM_')) env[k] = v;
  env.AI_FARM_TOKEN = token;
  const args = ['worker', '--server', server, '--max-tasks', '1', '--name', `demo-worker-${i}`];
  args.push('--id-file', join(dir, `worker-${i}.id`), '--no-progress');
  if (slowdown > 1) args.push('--slowdown', String(slowdown));
  try {
    return spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', log, log] });
  } finally {
    closeSync(log);
  }
}

/** SIGTERM, then SIGKILL after 10 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Where the task is, from the task, its assignments, its metrics and its rounds. */
async function snapshot(api: ApiClient, id: number, rounds: number): Promise<DemoSnapshot> {
  const [task, assignments, metrics, roundList] = await Promise.all([
    api.tasks.get(id),
    api.call<{ items: { rank: number; progress: number; status: string; attempt: number }[] }>(
      'GET',
      `/api/tasks/${id}/assignments`,
    ),
    api.call<{ items: { rank: number; round: number | null; metrics: Record<string, unknown> }[] }>(
      'GET',
      `/api/tasks/${id}/metrics`,
    ),
    api
      .call<{ items: { round: number; state: string; metrics: Record<string, unknown> | null }[] }>(
        'GET',
        `/api/tasks/${id}/rounds`,
      )
      .catch(() => ({ items: [] })),
  ]);
  // The latest sample of each rank (the server keeps one every 2 s), with its round.
  const latest = new Map<number, { round: number | null; metrics: Record<string, unknown> }>();
  for (const m of metrics.items) latest.set(m.rank, m);
  const current = new Map<number, { rank: number; progress: number; status: string; attempt: number }>();
  for (const a of assignments.items) {
    const prev = current.get(a.rank);
    if (!prev || a.attempt >= prev.attempt) current.set(a.rank, a);
  }
  return {
    status: task.status,
    rounds,
    ranks: [...current.values()]
      .sort((a, b) => a.rank - b.rank)
      .map((a) => ({
        rank: a.rank,
        progress: a.progress,
        status: a.status,
        loss: num(latest.get(a.rank)?.metrics.loss),
        accuracy: num(latest.get(a.rank)?.metrics.accuracy),
        metricsRound: latest.get(a.rank)?.round ?? undefined,
      })),
    closed: roundList.items
      .filter((r) => r.state === 'closed')
      .map((r) => ({
        round: r.round,
        heldoutAccuracy: num(r.metrics?.heldout_accuracy),
        loss: num(r.metrics?.heldout_loss ?? r.metrics?.loss),
      })),
  };
}

/** The first closed round whose held-out accuracy reached `target`, with its close time. */
async function firstAtTarget(
  api: ApiClient,
  id: number,
  target: number,
): Promise<{ round: number; closedAt: string } | null> {
  const rounds = await api
    .call<{
      items: {
        round: number;
        state: string;
        closed_at: string | null;
        metrics: Record<string, unknown> | null;
      }[];
    }>('GET', `/api/tasks/${id}/rounds`)
    .catch(() => ({ items: [] }));
  const hit = rounds.items
    .filter(
      (r) =>
        r.state === 'closed' && r.closed_at !== null && (num(r.metrics?.heldout_accuracy) ?? -1) >= target,
    )
    .sort((a, b) => a.round - b.round)[0];
  return hit ? { round: hit.round, closedAt: hit.closed_at! } : null;
}

/** Downloads a model with the admin token. */
async function download(base: string, path: string, token: string, dest: string): Promise<void> {
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET ${path} answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  await writeFile(dest, Buffer.from(await res.arrayBuffer()));
}
