import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InProcessBus, type BusTopics } from './bus.js';
import { TaskNewsBus } from './task-news.js';

type News = BusTopics['task.changed'];

describe('TaskNewsBus', () => {
  let inner: InProcessBus;
  let bus: TaskNewsBus;
  let seen: News[];
  beforeEach(() => {
    vi.useFakeTimers();
    inner = new InProcessBus();
    bus = new TaskNewsBus(inner, 500);
    seen = [];
    bus.subscribe('task.changed', (m) => seen.push(m));
  });
  afterEach(async () => {
    await bus.close();
    vi.useRealTimers();
  });

  it('sends the first progress at once, then the latest once a window', async () => {
    for (let p = 1; p <= 10; p++)
      await bus.publish('task.changed', { task_id: 1, status: 'running', progress: p });
    expect(seen).toEqual([{ task_id: 1, status: 'running', progress: 1 }]);
    vi.advanceTimersByTime(500);
    expect(seen.map((m) => m.progress)).toEqual([1, 10]);
    // The next window holds nothing: the task's window closes, the next news goes at once.
    vi.advanceTimersByTime(500);
    await bus.publish('task.changed', { task_id: 1, status: 'running', progress: 11 });
    expect(seen.map((m) => m.progress)).toEqual([1, 10, 11]);
  });

  it('sends a status change at once, after the progress held back', async () => {
    await bus.publish('task.changed', { task_id: 1, status: 'running', progress: 5 });
    await bus.publish('task.changed', { task_id: 1, status: 'running', progress: 99 });
    await bus.publish('task.changed', { task_id: 1, status: 'completed', progress: 100 });
    expect(seen).toEqual([
      { task_id: 1, status: 'running', progress: 5 },
      { task_id: 1, status: 'running', progress: 99 },
      { task_id: 1, status: 'completed', progress: 100 },
    ]);
    // Nothing is left to come after the status.
    vi.advanceTimersByTime(2000);
    expect(seen).toHaveLength(3);
  });

  it('sends news without progress at once, and keeps tasks apart', async () => {
    await bus.publish('task.changed', { task_id: 1, status: 'running', progress: 5 });
    await bus.publish('task.changed', { task_id: 2, status: 'running', progress: 7 });
    await bus.publish('task.changed', { task_id: 1, status: 'running' });
    expect(seen).toEqual([
      { task_id: 1, status: 'running', progress: 5 },
      { task_id: 2, status: 'running', progress: 7 },
      { task_id: 1, status: 'running' },
    ]);
  });

  it('passes other topics through and sends the held news when it closes', async () => {
    const controls: BusTopics['task.control'][] = [];
    bus.subscribe('task.control', (m) => controls.push(m));
    await bus.publish('task.control', { task_id: 1, action: 'pause' });
    expect(controls).toEqual([{ task_id: 1, action: 'pause' }]);
    await bus.publish('task.changed', { task_id: 3, status: 'running', progress: 1 });
    await bus.publish('task.changed', { task_id: 3, status: 'running', progress: 2 });
    await bus.close();
    expect(seen.map((m) => m.progress)).toEqual([1, 2]);
  });
});
