import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { startCommandRounds } from './command-rounds.js';
import { LineSplitter, parseOutputLine, TailBuffer } from './output-lines.js';
import { isTrainingTask } from './training-loop.js';
import {
  finishedExecution,
  type Execution,
  type ExecutionContext,
  type ExecutionOutcome,
  type Executor,
  type Metrics,
} from './types.js';

/** Options of the command executor, with their defaults. */
export interface CommandExecutorOptions {
  /** Between SIGTERM and SIGKILL when stopping, ms. Default 5000. */
  stopGraceMs?: number;
  /** How much of stderr goes into error_log, characters. Default 4096. */
  errorLogChars?: number;
  /** The environment commands inherit. Default process.env, without AI_FARM_TOKEN. */
  baseEnv?: NodeJS.ProcessEnv;
}

/** A task's `config` as the command executor reads it. */
interface CommandConfig {
  file: string;
  args: string[];
  cwd: string | undefined;
  env: Record<string, string>;
  timeoutMs: number | undefined;
}

/** Reads config.command, env, cwd and timeout_s; a string is the problem to report. */
export function parseCommandConfig(config: Record<string, unknown>): CommandConfig | string {
  const { command, env, cwd, timeout_s: timeout } = config;
  let file: string;
  let args: string[];
  if (typeof command === 'string' && command.trim()) {
    [file, args] = ['/bin/sh', ['-c', command]];
  } else if (
    Array.isArray(command) &&
    command.length > 0 &&
    command.every((a): a is string => typeof a === 'string') &&
    command[0]
  ) {
    [file, args] = [command[0], command.slice(1)];
  } else {
    return 'config.command must be a non-empty string (run by /bin/sh -c) or an array of strings (argv)';
  }
  const envOut: Record<string, string> = {};
  if (env !== undefined) {
    if (!env || typeof env !== 'object' || Array.isArray(env)) return 'config.env must be an object';
    for (const [k, v] of Object.entries(env)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
        return `config.env.${k} must be a string, number or boolean`;
      }
      envOut[k] = String(v);
    }
  }
  if (cwd !== undefined && typeof cwd !== 'string') return 'config.cwd must be a string';
  if (typeof cwd === 'string') {
    try {
      if (!statSync(cwd).isDirectory()) return `config.cwd ${cwd} is not a directory`;
    } catch {
      return `config.cwd ${cwd} does not exist on this worker`;
    }
  }
  if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout > 0))) {
    return 'config.timeout_s must be a positive number of seconds';
  }
  return { file, args, cwd, env: envOut, timeoutMs: timeout === undefined ? undefined : timeout * 1000 };
}

/** The environment a task's command sees: its task, then config.env on top. */
export function taskEnvironment(
  ctx: ExecutionContext,
  base: NodeJS.ProcessEnv,
  extra: Record<string, string>,
): NodeJS.ProcessEnv {
  const { task } = ctx;
  // The worker's own token must not reach code submitted by others.
  const { AI_FARM_TOKEN: _secret, ...inherited } = base;
  const env: NodeJS.ProcessEnv = {
    ...inherited,
    AI_FARM_TASK_ID: String(task.id),
    AI_FARM_TASK_TYPE: task.type,
    AI_FARM_TASK_CONFIG: JSON.stringify(task.config),
    AI_FARM_ATTEMPT: String(task.attempt),
    AI_FARM_RANK: String(task.rank),
    AI_FARM_WORLD_SIZE: String(task.world_size),
    AI_FARM_SERVER: ctx.serverUrl,
  };
  const { batch_size: batch, epochs } = task.config;
  if (typeof batch === 'number' || typeof batch === 'string') env.AI_FARM_BATCH_SIZE = String(batch);
  if (typeof epochs === 'number' || typeof epochs === 'string') env.AI_FARM_EPOCHS = String(epochs);
  return { ...env, ...extra };
}

/**
 * Runs `config.command` as a child process in its own process group, so pause (SIGSTOP),
 * resume (SIGCONT) and stop (SIGTERM, then SIGKILL) reach everything it started.
 * Stdout follows the progress protocol (see parseOutputLine); exit 0 completes the task,
 * anything else fails it with the tail of stderr as error_log.
 */
export class CommandExecutor implements Executor {
  constructor(private readonly opts: CommandExecutorOptions = {}) {}

  /** Runs the command; a training task (config.rounds) runs it once per round (command-rounds.ts). */
  start(ctx: ExecutionContext, roundEnv?: Record<string, string>): Execution {
    const cfg = parseCommandConfig(ctx.task.config);
    if (typeof cfg === 'string') return finishedExecution({ status: 'error', error_log: cfg });
    if (roundEnv === undefined && isTrainingTask(ctx.task)) return startCommandRounds(ctx, this);
    let child: ChildProcess;
    try {
      child = spawn(cfg.file, cfg.args, {
        cwd: cfg.cwd,
        env: taskEnvironment(ctx, this.opts.baseEnv ?? process.env, { ...cfg.env, ...roundEnv }),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      return finishedExecution({ status: 'error', error_log: `cannot start ${cfg.file}: ${String(err)}` });
    }
    return new CommandRun(child, ctx, cfg, this.opts);
  }
}

/** One command's life: output parsing, signals to its group, timeout, outcome. */
class CommandRun implements Execution {
  readonly done: Promise<ExecutionOutcome>;
  private finish!: (o: ExecutionOutcome) => void;
  private exited = false;
  private paused = false;
  private stopping: 'stop' | 'timeout' | undefined;
  private killTimer: ReturnType<typeof setTimeout> | undefined;
  private killAt = Infinity;
  private timeoutTimer: ReturnType<typeof setTimeout> | undefined;
  /** Running time left before config.timeout_s; paused time does not count. */
  private timeLeftMs: number | undefined;
  private runningSince = Date.now();
  private metrics: Metrics | undefined;
  private result: Record<string, unknown> | undefined;
  private readonly stderrTail: TailBuffer;
  private readonly stdoutTail: TailBuffer;

  constructor(
    private readonly child: ChildProcess,
    private readonly ctx: ExecutionContext,
    cfg: CommandConfig,
    private readonly opts: CommandExecutorOptions,
  ) {
    this.done = new Promise((resolve) => (this.finish = resolve));
    this.stderrTail = new TailBuffer(opts.errorLogChars ?? 4096);
    this.stdoutTail = new TailBuffer(opts.errorLogChars ?? 4096);
    this.timeLeftMs = cfg.timeoutMs;
    this.armTimeout();

    const out = new LineSplitter((line) => this.onStdoutLine(line));
    const err = new LineSplitter((line) => ctx.onOutput?.(line, 'stderr'));
    child.stdout?.setEncoding('utf8').on('data', (s: string) => out.push(s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      this.stderrTail.push(s);
      err.push(s);
    });
    child.on('error', (e) => {
      // Spawn failures (no such program) come here, with no exit to follow.
      if (!this.exited && child.pid === undefined) {
        this.exited = true;
        this.clearTimers();
        this.finish({ status: 'error', error_log: `cannot start ${cfg.file}: ${e.message}` });
      }
    });
    // Anything the command left running in its group goes with it; that also closes the
    // pipes a background process may hold, so 'close' (all output read) follows.
    child.on('exit', () => this.signal('SIGKILL'));
    child.on('close', (code, signal) => {
      out.end();
      err.end();
      this.onExit(code, signal);
    });
  }

  pause(): void {
    if (this.exited || this.paused) return;
    this.paused = true;
    if (this.timeLeftMs !== undefined) this.timeLeftMs -= Date.now() - this.runningSince;
    clearTimeout(this.timeoutTimer);
    this.signal('SIGSTOP');
  }

  resume(): void {
    if (this.exited || !this.paused) return;
    this.paused = false;
    this.signal('SIGCONT');
    this.runningSince = Date.now();
    this.armTimeout();
  }

  stop(graceMs?: number): Promise<ExecutionOutcome> {
    this.terminate('stop', graceMs);
    return this.done;
  }

  private terminate(why: 'stop' | 'timeout', graceMs = this.opts.stopGraceMs ?? 5000): void {
    if (this.exited) return;
    const deadline = Date.now() + graceMs;
    if (this.stopping) {
      // Already stopping: only ever bring the SIGKILL forward.
      if (deadline >= this.killAt) return;
    } else {
      this.stopping = why;
      this.signal('SIGTERM');
      // A stopped process only acts on SIGTERM once continued.
      if (this.paused) this.signal('SIGCONT');
    }
    this.killAt = deadline;
    clearTimeout(this.killTimer);
    this.killTimer = setTimeout(() => this.signal('SIGKILL'), graceMs);
  }

  private armTimeout(): void {
    if (this.timeLeftMs === undefined) return;
    this.timeoutTimer = setTimeout(() => this.terminate('timeout'), Math.max(0, this.timeLeftMs));
  }

  private clearTimers(): void {
    clearTimeout(this.killTimer);
    clearTimeout(this.timeoutTimer);
  }

  /** Signals the whole process group (the child leads it: spawned detached). */
  private signal(sig: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, sig);
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  private onStdoutLine(line: string): void {
    const parsed = parseOutputLine(line);
    if (parsed.kind === 'log') {
      this.stdoutTail.push(`${line}\n`);
      this.ctx.onOutput?.(line, 'stdout');
      return;
    }
    if (parsed.metrics) this.metrics = parsed.metrics;
    if (parsed.kind === 'result') this.result = parsed.result;
    else this.ctx.onProgress(parsed.progress, parsed.metrics);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exited = true;
    this.clearTimers();
    const base = { metrics: this.metrics, result: this.result };
    const tail = this.stderrTail.toString() || this.stdoutTail.toString();
    const log = (head: string) => (tail ? `${head}\n${tail}` : head);
    if (this.stopping === 'stop') {
      this.finish({ ...base, status: 'failed', stopped: true, error_log: 'stopped by request' });
    } else if (this.stopping === 'timeout') {
      const s = Number(this.ctx.task.config.timeout_s);
      this.finish({ ...base, status: 'failed', error_log: log(`timed out after ${s} s (config.timeout_s)`) });
    } else if (code === 0) {
      this.finish({ ...base, status: 'completed', result: this.result ?? { exit_code: 0 } });
    } else {
      const head = signal ? `command killed by ${signal}` : `command exited with code ${code}`;
      this.finish({ ...base, status: 'failed', error_log: log(head) });
    }
  }
}
