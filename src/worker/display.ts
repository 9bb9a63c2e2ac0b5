import cliProgress from 'cli-progress';
import type { TaskData } from '../api/protocol.js';
import { summarizeMetrics } from '../api/metrics-summary.js';
import type { Metrics } from './executors/types.js';

/** What the worker shows on its terminal. Two real implementations: bars on a TTY, log lines otherwise. */
export interface WorkerDisplay {
  info(message: string): void;
  warn(message: string): void;
  taskStarted(task: TaskData): void;
  taskProgress(taskId: number, progress: number, metrics?: Metrics): void;
  /** running, paused, holding, stopping... */
  taskState(taskId: number, state: string): void;
  /** A line the task printed (shown with --verbose only). */
  taskOutput(taskId: number, line: string): void;
  taskFinished(taskId: number, summary: string): void;
  close(): void;
}

const label = (t: TaskData) => `task ${t.id}${t.name ? ` ${t.name}` : ''} (${t.type}, attempt ${t.attempt})`;
const stamp = () => new Date().toISOString().replace('T', ' ').slice(0, 19);

/** Plain log lines, for logs and pipes: progress every 10 points (or after 30 s of silence). */
export class LineDisplay implements WorkerDisplay {
  private readonly last = new Map<number, { progress: number; at: number }>();

  constructor(
    private readonly verbose = false,
    private readonly out: (line: string) => void = (l) => console.log(l),
  ) {}

  info(message: string): void {
    this.out(`${stamp()} ${message}`);
  }
  warn(message: string): void {
    this.out(`${stamp()} WARN ${message}`);
  }
  taskStarted(task: TaskData): void {
    this.last.set(task.id, { progress: 0, at: Date.now() });
    this.info(`${label(task)}: started`);
  }
  taskProgress(taskId: number, progress: number, metrics?: Metrics): void {
    const prev = this.last.get(taskId);
    if (prev && progress < 100 && progress - prev.progress < 10 && Date.now() - prev.at < 30_000) return;
    this.last.set(taskId, { progress, at: Date.now() });
    this.info(`task ${taskId}: ${progress.toFixed(1)}% ${summarizeMetrics(metrics)}`.trimEnd());
  }
  taskState(taskId: number, state: string): void {
    this.info(`task ${taskId}: ${state}`);
  }
  taskOutput(taskId: number, line: string): void {
    if (this.verbose) this.out(`[task ${taskId}] ${line}`);
  }
  taskFinished(taskId: number, summary: string): void {
    this.last.delete(taskId);
    this.info(`task ${taskId}: ${summary}`);
  }
  close(): void {}
}

/** One progress bar per task (cli-progress), messages printed above them. */
export class TtyDisplay implements WorkerDisplay {
  private readonly bars = new cliProgress.MultiBar(
    {
      format: '{label} |{bar}| {percentage}% {state} {metrics}',
      barsize: 30,
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stdout,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  private readonly byTask = new Map<number, cliProgress.SingleBar>();

  constructor(private readonly verbose = false) {}

  info(message: string): void {
    this.print(`${stamp()} ${message}`);
  }
  warn(message: string): void {
    this.print(`${stamp()} WARN ${message}`);
  }
  taskStarted(task: TaskData): void {
    this.info(`${label(task)}: started`);
    const bar = this.bars.create(100, 0, { label: `task ${task.id}`, state: 'running', metrics: '' });
    this.byTask.set(task.id, bar);
  }
  taskProgress(taskId: number, progress: number, metrics?: Metrics): void {
    this.byTask.get(taskId)?.update(Math.round(progress * 10) / 10, { metrics: summarizeMetrics(metrics) });
  }
  taskState(taskId: number, state: string): void {
    this.byTask.get(taskId)?.update({ state });
  }
  taskOutput(taskId: number, line: string): void {
    if (this.verbose) this.print(`[task ${taskId}] ${line}`);
  }
  taskFinished(taskId: number, summary: string): void {
    const bar = this.byTask.get(taskId);
    if (bar) this.bars.remove(bar);
    this.byTask.delete(taskId);
    // An idle multibar keeps redrawing (and the process alive): stop it until the next task.
    if (this.byTask.size === 0) this.bars.stop();
    this.info(`task ${taskId}: ${summary}`);
  }
  close(): void {
    this.bars.stop();
  }

  /** The multibar only flushes its log while bars are drawn; otherwise write directly. */
  private print(line: string): void {
    if (this.byTask.size) this.bars.log(`${line}\n`);
    else process.stdout.write(`${line}\n`);
  }
}
