import type { ControlMessage, RegisteredMessage, TaskData } from '../api/protocol.js';
import type { WorkerDisplay } from './display.js';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { defaultExecutors } from './executors/index.js';
import {
  finishedExecution,
  type Execution,
  type ExecutionContext,
  type ExecutionOutcome,
  type ExecutorRegistry,
} from './executors/types.js';
import { CodeCache } from './code/code-cache.js';
import { startWithCode, taskCodeRef } from './code/with-code.js';
import type { IdFile } from './id-file.js';
import { ProgressThrottle, type ProgressSample } from './progress-throttle.js';
import { ProtocolError, WorkerClientError } from './sdk-errors.js';
import type { DisconnectInfo, WorkerClientOptions } from './sdk-types.js';
import { WorkerClient } from './worker-client.js';
import { collectSystemInfo, collectUtilization, type SessionInfo } from './system-info.js';

/** How a worker runs. */
export interface WorkerOptions {
  /** The gateway's WebSocket URL. */
  wsUrl: string;
  /** The HTTP API's base URL (given to commands as AI_FARM_SERVER). */
  httpUrl: string;
  /** A worker-role token. */
  token?: string | undefined;
  /** Tasks run at once. Default 1. */
  maxTasks?: number;
  /** A label for this worker, sent with its registration (`name` and session.name). */
  name?: string | undefined;
  /** Where the client id is kept between runs. Default: nothing persisted. */
  idFile?: IdFile | undefined;
  /** Executors by task type. Default: defaultExecutors() (command). */
  executors?: ExecutorRegistry;
  display: WorkerDisplay;
  /** Least time between two progress messages of one task, ms. Default 250. */
  progressIntervalMs?: number;
  /** Grace period of a stop before SIGKILL, ms (commands). Default 5000. */
  stopGraceMs?: number;
  /** Passed on to the WorkerClient (backoff, timeouts). */
  client?: Partial<WorkerClientOptions>;
  /** Cache of task code (config.code). Default ~/.ai-farm/code-cache, 1 GiB. */
  codeCache?: CodeCache;
  /** Trains this many times slower (ExecutionContext.slowdown). Default 1. */
  slowdown?: number | undefined;
}

/** Why a task's execution ended without a result to report. */
type Abandoned = 'stopped by the server' | 'reassigned' | 'worker shutting down';

interface Run {
  task: TaskData;
  /** Undefined while held: assigned paused, waiting for resume before it starts. */
  execution?: Execution | undefined;
  throttle: ProgressThrottle;
  paused: boolean;
  abandoned?: Abandoned | undefined;
  /** Output lines not yet sent to the server (task_log), and the timer that sends them. */
  logLines: string[];
  logTimer?: NodeJS.Timeout | undefined;
}

/**
 * The reference worker: registers this machine, runs the tasks the server assigns (up to
 * maxTasks at once) through the executor of their type, reports progress and results,
 * and obeys pause, resume and stop.
 *
 * Shutdown (SIGINT/SIGTERM in the CLI) stops running tasks and closes the connection
 * without reporting them: a `failed` result would end the task for good, whereas a
 * worker going away is not the task's fault. The server treats the dropped connection
 * like any lost worker and hands the work to another one (a new attempt).
 */
export class Worker {
  private readonly opts: WorkerOptions;
  private readonly client: WorkerClient;
  private readonly executors: ExecutorRegistry;
  private readonly codeCache: CodeCache;
  private readonly runs = new Map<number, Run>();
  private readonly deliveries = new Set<Promise<unknown>>();
  /** Assignments (task/attempt/rank) whose result is sent but not yet acknowledged. */
  private readonly delivering = new Set<string>();
  private readonly session: SessionInfo;
  private readonly maxTasks: number;
  private registrations = 0;
  private stopping: Promise<void> | undefined;
  /** Resolves when the worker stops for good: after shutdown(), or with the error that ended it. */
  readonly finished: Promise<WorkerClientError | undefined>;

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    this.maxTasks = opts.maxTasks ?? 1;
    this.executors = opts.executors ?? defaultExecutors({ command: { stopGraceMs: opts.stopGraceMs } });
    this.codeCache =
      opts.codeCache ??
      new CodeCache({ dir: join(homedir(), '.ai-farm', 'code-cache'), maxBytes: 1024 ** 3 });
    this.session = {
      created_at: new Date().toISOString(),
      total_tasks_completed: 0,
      performance_metrics: {},
      ...(opts.name ? { name: opts.name } : {}),
    };
    this.client = new WorkerClient({
      url: opts.wsUrl,
      token: opts.token,
      id: opts.idFile?.read(),
      maxTasks: this.maxTasks,
      taskTypes: this.executors.types(),
      systemInfo: async () => {
        const info = await collectSystemInfo({ ...this.session });
        return opts.name ? { ...info, name: opts.name } : info;
      },
      utilization: collectUtilization,
      ...opts.client,
    });
    this.finished = new Promise((resolve) => this.client.once('closed', resolve));
    this.client.on('registered', (m) => this.onRegistered(m));
    this.client.on('disconnected', (d) => this.onDisconnected(d));
    this.client.on('task', (t) => this.onTask(t));
    this.client.on('pause', (c) => this.onControl(c));
    this.client.on('resume', (c) => this.onControl(c));
    this.client.on('stop', (c) => this.onControl(c));
    // Training rounds go to the task's execution (see executors/training-loop.ts).
    this.client.on('round_start', (m) => this.runs.get(m.task_id)?.execution?.deliver?.(m));
    this.client.on('training_complete', (m) => this.runs.get(m.task_id)?.execution?.deliver?.(m));
    this.client.on('server_error', (e) => opts.display.warn(`server error ${e.code}: ${e.message}`));
    this.client.on('invalid_message', (problem) => opts.display.warn(`ignored a message: ${problem}`));
    this.client.on('closed', (err) => {
      if (!err) return;
      const hint = err.code === 'client_id_taken' ? ' (give each worker its own --id-file)' : '';
      opts.display.warn(`stopped: ${err.message}${hint}`);
    });
  }

  /** The client id, once registered. */
  get id(): string | undefined {
    return this.client.id;
  }

  /** Ids of the tasks running or held now. */
  get taskIds(): number[] {
    return [...this.runs.keys()];
  }

  /** Connects; resolves once registered (retrying meanwhile), rejects if the server refuses. */
  async start(): Promise<void> {
    this.opts.display.info(`connecting to ${this.opts.wsUrl} (runs ${this.executors.types().join(', ')})`);
    await this.client.connect();
  }

  /**
   * Stops every task (SIGTERM, then SIGKILL after the grace period), waits briefly for
   * results already on their way, and disconnects. Calling it again hurries it: tasks
   * still stopping are killed at once.
   */
  shutdown(): Promise<void> {
    if (this.stopping) {
      for (const run of this.runs.values()) void run.execution?.stop(0);
      return this.stopping;
    }
    this.stopping = (async () => {
      const n = this.runs.size;
      if (n) this.opts.display.info(`shutting down: stopping ${n} task(s); the server will reassign them`);
      const stops: Promise<ExecutionOutcome>[] = [];
      for (const run of this.runs.values()) {
        run.abandoned ??= 'worker shutting down';
        run.throttle.cancel();
        if (run.execution) stops.push(run.execution.stop());
      }
      await Promise.all(stops);
      this.runs.clear();
      await Promise.race([Promise.allSettled([...this.deliveries]), sleep(5000)]);
      await this.client.close(1001, 'worker shutting down');
      this.opts.display.close();
      this.opts.idFile?.release();
    })();
    return this.stopping;
  }

  private onRegistered(m: RegisteredMessage): void {
    this.registrations++;
    try {
      this.opts.idFile?.save(m.client_id);
    } catch (err) {
      this.opts.display.warn(`cannot save the client id to ${this.opts.idFile?.path}: ${String(err)}`);
    }
    const again = this.registrations > 1 ? 're' : '';
    this.opts.display.info(
      `${again}registered as ${m.client_id} (max ${this.maxTasks} task(s), heartbeat every ${m.heartbeat_interval} s)`,
    );
    if (this.runs.size < this.maxTasks) this.askForWork();
  }

  private onDisconnected(d: DisconnectInfo): void {
    const why = `${d.code}${d.reason ? ` ${d.reason}` : ''}`;
    const next = d.reconnectInMs === null ? '' : `; reconnecting in ${(d.reconnectInMs / 1000).toFixed(1)} s`;
    this.opts.display.warn(`connection lost (${why})${next}`);
  }

  private askForWork(): void {
    if (this.stopping || !this.client.connected) return;
    this.client.requestTask().catch(() => undefined);
  }

  private onTask(task: TaskData): void {
    if (this.stopping) return;
    // After a reconnection the server sends its live assignments again; one whose result
    // is still on its way (the SDK re-sends it) is finished here and must not run twice.
    if (this.delivering.has(assignmentKey(task))) return;
    const current = this.runs.get(task.id);
    if (current && current.task.attempt === task.attempt && current.task.rank === task.rank) {
      // The same assignment again (after a reconnection): only its paused flag may be news.
      if (task.paused && !current.paused) this.pause(current);
      // ...and, for a training task, the round it is at now.
      if (current.execution) current.execution.deliver?.({ type: 'task', data: task });
      else current.task = task;
      return;
    }
    if (current) this.abandon(current, 'reassigned');
    const executor = this.executors.get(task.type);
    if (!executor) {
      const types = this.executors.types().join(', ');
      this.report(task, {
        status: 'error',
        error_log: `this worker has no executor for task type "${task.type}" (it runs: ${types})`,
      });
      this.opts.display.warn(`task ${task.id}: unknown type ${task.type}; reported as error`);
      return;
    }
    const run: Run = {
      task,
      paused: false,
      throttle: new ProgressThrottle((s) => this.sendProgress(run, s), this.opts.progressIntervalMs ?? 250),
      logLines: [],
    };
    this.runs.set(task.id, run);
    this.opts.display.taskStarted(task);
    if (task.paused) {
      run.paused = true;
      this.opts.display.taskState(task.id, 'paused (starts on resume)');
    } else {
      this.launch(run);
    }
  }

  private launch(run: Run): void {
    const { task } = run;
    const executor = this.executors.get(task.type);
    if (!executor) return;
    const ctx: ExecutionContext = {
      task,
      serverUrl: this.opts.httpUrl,
      onProgress: (progress, metrics, round) => {
        if (!run.abandoned) run.throttle.push({ progress, metrics, round });
      },
      onOutput: (line) => {
        this.opts.display.taskOutput(task.id, line);
        this.queueLog(run, line);
      },
      token: this.opts.token,
      clientId: this.client.id,
      slowdown: this.opts.slowdown,
    };
    // Code shipped with the task is fetched and unpacked first (worker/code/).
    const code = taskCodeRef(task.config);
    const execution =
      typeof code === 'string'
        ? finishedExecution({ status: 'error', error_log: code })
        : code
          ? startWithCode(code, ctx, this.codeCache, (c) => executor.start(c))
          : executor.start(ctx);
    run.execution = execution;
    void execution.done.then((outcome) => this.onDone(run, outcome));
  }

  private onControl(c: ControlMessage): void {
    const run = this.runs.get(c.task_id);
    if (!run) {
      this.opts.display.warn(`${c.type} for task ${c.task_id}, which is not running here`);
      return;
    }
    if (c.type === 'pause') this.pause(run);
    else if (c.type === 'resume') {
      if (!run.paused) return;
      run.paused = false;
      this.opts.display.taskState(run.task.id, 'running');
      if (run.execution) run.execution.resume();
      else this.launch(run);
    } else {
      this.opts.display.taskState(run.task.id, 'stopping');
      this.abandon(run, 'stopped by the server');
    }
  }

  private pause(run: Run): void {
    if (run.paused) return;
    run.paused = true;
    run.execution?.pause();
    this.opts.display.taskState(run.task.id, 'paused');
  }

  /** Ends a run whose outcome nobody wants any more (stopped, reassigned). */
  private abandon(run: Run, why: Abandoned): void {
    run.abandoned ??= why;
    run.throttle.cancel();
    if (run.execution) void run.execution.stop();
    else this.finish(run, why);
  }

  private sendProgress(run: Run, s: ProgressSample): void {
    const { task } = run;
    this.opts.display.taskProgress(task.id, s.progress, s.metrics);
    const report = {
      task_id: task.id,
      progress: s.progress,
      attempt: task.attempt,
      rank: task.rank,
      ...(s.round === undefined ? {} : { round: s.round }),
    };
    this.client.sendProgress(s.metrics ? { ...report, metrics: s.metrics } : report).catch((err: unknown) => {
      // A lost progress message is superseded by the next; a refused lease is not.
      if (err instanceof ProtocolError && isLeaseGone(err.code)) this.abandon(run, 'reassigned');
    });
  }

  private onDone(run: Run, outcome: ExecutionOutcome): void {
    if (run.abandoned) {
      this.finish(run, run.abandoned);
      return;
    }
    run.throttle.flush();
    // Lines go before the result: once the result ends the lease, the server refuses them.
    this.flushLog(run);
    if (outcome.status === 'completed') this.session.total_tasks_completed++;
    this.report(run.task, outcome);
    const firstLine = outcome.error_log?.split('\n', 1)[0];
    this.finish(run, outcome.status + (outcome.status !== 'completed' && firstLine ? `: ${firstLine}` : ''));
  }

  /** Output lines reach the server in batches: at most one message a second, 200 lines each. */
  private queueLog(run: Run, line: string): void {
    if (run.abandoned) return;
    run.logLines.push(line.length > 4096 ? line.slice(0, 4096) : line);
    if (run.logLines.length >= 200) this.flushLog(run);
    else run.logTimer ??= setTimeout(() => this.flushLog(run), 1000).unref();
  }

  private flushLog(run: Run): void {
    if (run.logTimer) clearTimeout(run.logTimer);
    run.logTimer = undefined;
    const lines = run.logLines.splice(0, 200);
    if (lines.length === 0 || !this.client.connected) return;
    const { task } = run;
    // Best effort: a batch lost with the connection is not sent again.
    this.client
      .sendLog({ task_id: task.id, attempt: task.attempt, rank: task.rank, lines })
      .catch(() => undefined);
    if (run.logLines.length > 0) this.flushLog(run);
  }

  private finish(run: Run, summary: string): void {
    if (this.runs.get(run.task.id) === run) this.runs.delete(run.task.id);
    this.opts.display.taskFinished(run.task.id, summary);
    if (this.runs.size < this.maxTasks) this.askForWork();
  }

  /** Sends a task's result; kept and re-sent by the SDK until the server acknowledges it. */
  private report(task: TaskData, outcome: ExecutionOutcome): void {
    const key = assignmentKey(task);
    this.delivering.add(key);
    const delivery = this.client
      .sendResult({
        task_id: task.id,
        status: outcome.status,
        metrics: outcome.metrics ?? {},
        attempt: task.attempt,
        rank: task.rank,
        ...(outcome.result ? { result: outcome.result } : {}),
        ...(outcome.error_log ? { error_log: outcome.error_log.slice(-65536) } : {}),
      })
      .catch((err: unknown) => {
        if (err instanceof WorkerClientError && err.code === 'closed') return;
        const why = err instanceof Error ? err.message : String(err);
        this.opts.display.warn(`task ${task.id}: result not accepted (${why})`);
      })
      .finally(() => {
        this.deliveries.delete(delivery);
        this.delivering.delete(key);
      });
    this.deliveries.add(delivery);
  }
}

const assignmentKey = (t: Pick<TaskData, 'id' | 'attempt' | 'rank'>) => `${t.id}/${t.attempt}/${t.rank}`;

/** Error codes meaning this client no longer holds the task's lease. */
function isLeaseGone(code: string): boolean {
  return code === 'stale_attempt' || code === 'task_not_found' || code === 'not_assigned';
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
