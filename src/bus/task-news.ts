import type { Bus, BusTopics, Topic } from './bus.js';

type TaskNews = BusTopics['task.changed'];

/** How often one task's progress news goes out at most, ms. */
export const TASK_NEWS_WINDOW_MS = 500;

/** One task's news window: the status last sent, and the progress news held back since. */
interface Window {
  status: string;
  held: TaskNews | null;
  timer: NodeJS.Timeout;
}

/**
 * A bus that sends task news at the pace its readers can use. A worker reports progress after
 * every batch; sent as it came, each report would cross Redis to every instance and wake every
 * live stream. `task.changed` news that only moves a task's progress (the status of the last
 * news of that task, with a progress) goes out at most once a window per task, the latest
 * winning; any other news of the task (a status change, news without progress) goes at once,
 * after the progress held back, so every reader still sees every status, in order. Other topics
 * pass straight through.
 */
export class TaskNewsBus implements Bus {
  private readonly windows = new Map<number, Window>();

  constructor(
    private readonly inner: Bus,
    private readonly windowMs = TASK_NEWS_WINDOW_MS,
  ) {}

  async publish<T extends Topic>(topic: T, message: BusTopics[T]): Promise<void> {
    if (topic !== 'task.changed') return this.inner.publish(topic, message);
    const news = message as TaskNews;
    const w = this.windows.get(news.task_id);
    if (!w) {
      this.open(news.task_id, news.status);
      return this.inner.publish('task.changed', news);
    }
    if (news.status === w.status && news.progress !== undefined) {
      w.held = news;
      return;
    }
    const held = w.held;
    w.held = null;
    w.status = news.status;
    if (held) await this.inner.publish('task.changed', held);
    await this.inner.publish('task.changed', news);
  }

  subscribe<T extends Topic>(topic: T, handler: (message: BusTopics[T]) => void): () => void {
    return this.inner.subscribe(topic, handler);
  }

  /** Sends the news held back, then closes the bus under it. */
  async close(): Promise<void> {
    const held = [...this.windows.values()].flatMap((w) => {
      clearTimeout(w.timer);
      return w.held ? [w.held] : [];
    });
    this.windows.clear();
    for (const news of held) await this.inner.publish('task.changed', news);
    await this.inner.close();
  }

  private open(taskId: number, status: string): void {
    const timer = setTimeout(() => this.tick(taskId), this.windowMs);
    timer.unref();
    this.windows.set(taskId, { status, held: null, timer });
  }

  /** A window ends: its held news goes out and opens the next one; a quiet task's window closes. */
  private tick(taskId: number): void {
    const w = this.windows.get(taskId);
    if (!w) return;
    this.windows.delete(taskId);
    if (!w.held) return;
    this.open(taskId, w.held.status);
    void this.inner.publish('task.changed', w.held).catch(() => undefined);
  }
}
