import cliProgress from 'cli-progress';
import { InvalidArgumentError, type Command } from 'commander';
import type { CreateTaskBody, Requirements, Task } from '../api/tasks.js';
import type { TaskStatus } from '../storage/schema.js';
import { ApiError, type ApiClient } from '../api/api-client.js';
import { summarizeMetrics } from '../api/metrics-summary.js';
import type { CodeBundle } from '../api/code.js';
import { apiAction, printPage, withConnFlags, type Conn } from './api-action.js';
import { modelRef, pushBundle } from './models-commands.js';

type SetExit = (code: number) => void;

interface CreateFlags extends Conn {
  type?: string;
  command?: string;
  config?: Record<string, unknown>;
  requirements?: Record<string, unknown>;
  minCpuCores?: number;
  minRamGb?: number;
  gpus?: number;
  minGpuMemoryGb?: number;
  priority?: number;
  name?: string;
  maxAttempts?: number;
  watch?: boolean;
  interval: number;
  /** A folder or .tar.gz pushed as the task's code bundle (config.code). */
  code?: string;
  /** A registered NAME@VERSION (config.model). */
  model?: string;
  exclude?: string[];
}

const FINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'error', 'cancelled']);

const jsonObject = (what: string) => (value: string) => {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch (err) {
    throw new InvalidArgumentError(`${what} is not valid JSON (${(err as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new InvalidArgumentError(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
};
const collect = (value: string, previous: string[] = []) => [...previous, value];
const number = (value: string) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('expected a number');
  return n;
};
const integer = (value: string) => {
  const n = number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError('expected an integer');
  return n;
};
const taskId = (value: string) => {
  const n = integer(value);
  if (n < 1) throw new InvalidArgumentError('expected a task id');
  return n;
};

/** The body of POST /api/tasks from the flags of `tasks create`. */
export function createBodyFromFlags(f: CreateFlags): CreateTaskBody | string {
  const config: Record<string, unknown> = { ...f.config };
  if (f.command !== undefined) config.command = f.command;
  const type = f.type ?? (config.command !== undefined ? 'command' : undefined);
  if (!type) return 'give --type (or --command for a command task)';
  const requirements: Record<string, unknown> = { ...f.requirements };
  if (f.minCpuCores !== undefined) requirements.min_cpu_cores = f.minCpuCores;
  if (f.minRamGb !== undefined) requirements.min_ram_gb = f.minRamGb;
  if (f.gpus !== undefined) requirements.gpu_count = f.gpus;
  if (f.minGpuMemoryGb !== undefined) requirements.min_gpu_memory_gb = f.minGpuMemoryGb;
  if (f.model !== undefined) config.model = f.model;
  const body: CreateTaskBody = { type, requirements: requirements as Requirements, config };
  if (f.priority !== undefined) body.priority = f.priority;
  if (f.name !== undefined) body.name = f.name;
  if (f.maxAttempts !== undefined) body.max_attempts = f.maxAttempts;
  return body;
}

/** One line per task, for people. */
export function taskLine(t: Task): string {
  const name = t.name ? ` ${t.name}` : '';
  const where = t.client_id ? ` on ${t.client_id}` : '';
  const why = t.unschedulable_reason ? ` (${t.unschedulable_reason})` : '';
  return `#${t.id}${name} [${t.type}] ${t.status} ${t.progress.toFixed(1)}%${where}${why}`;
}

function print(t: Task, json: boolean | undefined): void {
  console.log(json ? JSON.stringify(t, null, 2) : taskLine(t));
}

/**
 * `ai-farm tasks create|list|show|watch|pause|resume|cancel|delete`: submit and follow work
 * over the HTTP API. Exit codes: 0 done, 1 the API refused or could not be reached (the
 * error's code and message are printed), 2 bad flags; `watch` exits 1 unless the task completed.
 */
export function tasksCommands(program: Command, setExit: SetExit): void {
  const tasks = program.command('tasks').description('submit and follow tasks (HTTP API)');
  const conn = withConnFlags;
  /** Runs `fn` with a client from the flags; maps API errors to exit codes. */
  const withApi = apiAction(setExit);
  /** A subcommand of one task, by id. */
  const onTask = (name: string, what: string) =>
    conn(tasks.command(name).description(what).argument('<id>', 'task id', taskId));

  conn(tasks.command('create').description('create a task'))
    .option('-t, --type <type>', 'task type (default command when --command is given)')
    .option('--command <cmd>', 'the command line to run (sets config.command; type command)')
    .option('--config <json>', 'task config as a JSON object', jsonObject('--config'))
    .option('--requirements <json>', 'requirements as a JSON object', jsonObject('--requirements'))
    .option('--min-cpu-cores <n>', 'requirements.min_cpu_cores', integer)
    .option('--min-ram-gb <n>', 'requirements.min_ram_gb', number)
    .option('--gpus <n>', 'requirements.gpu_count', integer)
    .option('--min-gpu-memory-gb <n>', 'requirements.min_gpu_memory_gb', number)
    .option('--priority <n>', 'higher runs first (default 0)', integer)
    .option('--name <name>', 'a name for the task')
    .option('--max-attempts <n>', 'attempts before the task fails (default 3)', integer)
    .option(
      '--code <path>',
      'ship this folder (or .tar.gz) with the task: pushed as a bundle, unpacked on the worker',
    )
    .option(
      '--exclude <pattern>',
      'with --code: leave out files matching this .gitignore pattern (repeatable)',
      collect,
    )
    .option('--model <name@version>', 'run a registered model version (config.model)', modelRef)
    .option('-w, --watch', 'then watch it until it ends (exit code as watch)')
    .option('--interval <ms>', 'polling interval of --watch', integer, 2000)
    .action(
      withApi(async (api, flags: CreateFlags) => {
        const body = createBodyFromFlags(flags);
        if (typeof body === 'string') {
          console.error(`error: ${body}`);
          return 2;
        }
        if (flags.code !== undefined) {
          let bundle: CodeBundle;
          try {
            bundle = await pushBundle(api, flags.code, flags.exclude);
          } catch (err) {
            if (err instanceof ApiError) throw err;
            console.error(`error: --code ${flags.code}: ${(err as Error).message}`);
            return 2;
          }
          body.config = { ...body.config, code: { digest: bundle.digest } };
          if (!flags.json) console.error(`pushed code ${bundle.digest} (${bundle.size} B)`);
        }
        const task = await api.tasks.create(body);
        if (!flags.watch) return print(task, flags.json);
        if (!flags.json) console.log(`created task ${task.id}`);
        return watchTask(api, task.id, flags.interval, flags.json);
      }),
    );

  conn(tasks.command('list').description('list tasks, newest first'))
    .option('--status <status>', 'only tasks in this status')
    .option('-t, --type <type>', 'only tasks of this type')
    .option('--client <id>', 'only tasks of this client')
    .option('--limit <n>', 'page size (1-500)', integer)
    .option('--offset <n>', 'tasks to skip', integer)
    .action(
      withApi(
        async (
          api,
          f: Conn & { status?: TaskStatus; type?: string; client?: string; limit?: number; offset?: number },
        ) => {
          const page = await api.tasks.list({
            status: f.status,
            type: f.type,
            client_id: f.client,
            limit: f.limit,
            offset: f.offset,
          });
          printPage(page, f.json, taskLine);
        },
      ),
    );

  onTask('show', "a task's details and latest events").action(
    withApi(async (api, id: number, f: Conn) => {
      const [task, events] = await Promise.all([api.tasks.get(id), api.tasks.events(id)]);
      if (f.json) return console.log(JSON.stringify({ ...task, events }, null, 2));
      console.log(taskLine(task));
      const metrics = summarizeMetrics(task.metrics ?? undefined, 6);
      if (metrics) console.log(`  metrics: ${metrics}`);
      console.log(`  attempts: ${task.attempts}/${task.max_attempts}, priority ${task.priority}`);
      console.log(`  requirements: ${JSON.stringify(task.requirements)}`);
      console.log(`  config: ${JSON.stringify(task.config)}`);
      if (task.result) console.log(`  result: ${JSON.stringify(task.result)}`);
      if (task.error_log) console.log(`  error_log:\n${task.error_log.replace(/^/gm, '    ')}`);
      for (const e of events.slice(0, 10)) console.log(`  ${e.at} ${e.kind}: ${e.message}`);
    }),
  );

  onTask('watch', 'follow a task until it ends; exit 0 if it completed')
    .option('--interval <ms>', 'polling interval (the API allows 60 requests/min by default)', integer, 2000)
    .action(
      withApi(async (api, id: number, f: Conn & { interval: number }) =>
        watchTask(api, id, f.interval, f.json),
      ),
    );

  const change = (name: string, status: TaskStatus, what: string) =>
    onTask(name, what).action(
      withApi(async (api, id: number, f: Conn) => print(await api.tasks.changeStatus(id, status), f.json)),
    );
  change('pause', 'paused', 'pause a task (its processes are suspended)');
  change('resume', 'running', 'resume a paused task');
  change('cancel', 'cancelled', 'cancel a task (its processes are stopped)');
  change('retry', 'pending', 'queue a failed or cancelled task again');

  onTask('delete', 'delete a task, stopping it first').action(
    withApi(async (api, id: number, f: Conn) => {
      await api.tasks.delete(id);
      console.log(f.json ? JSON.stringify({ deleted: id }) : `deleted task ${id}`);
    }),
  );
}

/**
 * Polls a task until it ends: a progress bar on a terminal, a line per change otherwise,
 * and with `json` only the final task. Returns the exit code: 0 if it completed.
 */
export async function watchTask(
  api: ApiClient,
  id: number,
  intervalMs: number,
  json?: boolean,
): Promise<number> {
  const tty = !json && process.stdout.isTTY;
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: `task ${id} |{bar}| {percentage}% {status} {metrics}`,
          stream: process.stdout,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let last = '';
  let failures = 0;
  bar?.start(100, 0, { status: '', metrics: '' });
  try {
    for (;;) {
      let task: Task;
      try {
        task = await api.tasks.get(id);
        failures = 0;
      } catch (err) {
        // A server restart or the rate limit is no reason to stop watching; a missing task is.
        if (!(err instanceof ApiError) || ![0, 429, 503].includes(err.status) || ++failures > 30) throw err;
        await sleep(Math.max(intervalMs, err.retryAfterMs ?? 0));
        continue;
      }
      const metrics = summarizeMetrics(task.metrics ?? undefined);
      if (bar) bar.update(Math.round(task.progress * 10) / 10, { status: task.status, metrics });
      else if (!json) {
        const line = `${task.status} ${task.progress.toFixed(1)}% ${metrics}`.trimEnd();
        if (line !== last) console.log(`task ${id}: ${line}`);
        last = line;
      }
      if (FINAL.has(task.status)) {
        bar?.stop();
        if (json) console.log(JSON.stringify(task, null, 2));
        else console.log(taskLine(task) + (task.error_log ? `\n${task.error_log}` : ''));
        return task.status === 'completed' ? 0 : 1;
      }
      await sleep(intervalMs);
    }
  } finally {
    bar?.stop();
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
