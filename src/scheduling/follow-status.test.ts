import { describe, expect, it } from 'vitest';
import { announceStatus, InProcessBus } from '../bus/bus.js';
import { followTaskStatus, type StatusFollower } from './follow-status.js';

/** A dispatcher stand-in that writes down what it was asked to do. */
function recorder(): StatusFollower & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    refresh: async (id) => void calls.push(`refresh ${id}`),
    drop: (id) => void calls.push(`drop ${id}`),
    farmChanged: () => void calls.push('farmChanged'),
  };
}

describe('followTaskStatus', () => {
  it('acts on task.status and never on the task.changed news', async () => {
    const bus = new InProcessBus();
    const d = recorder();
    const errors: unknown[] = [];
    const stop = followTaskStatus(bus, d, (err) => errors.push(err));
    // News alone, whatever its status, decides nothing.
    await bus.publish('task.changed', { task_id: 1, status: 'pending' });
    await bus.publish('task.changed', { task_id: 1, status: 'completed', progress: 100 });
    expect(d.calls).toEqual([]);

    await bus.publish('task.status', { task_id: 1, status: 'pending' });
    await bus.publish('task.status', { task_id: 1, status: 'running' });
    await bus.publish('task.status', { task_id: 1, status: 'paused' });
    await bus.publish('task.status', { task_id: 1, status: 'completed' });
    await bus.publish('task.status', { task_id: 2, status: 'deleted' });
    // Pending again (requeued) or ended: the task's clients are free.
    expect(d.calls).toEqual([
      'refresh 1',
      'farmChanged',
      'drop 1',
      'drop 1',
      'drop 1',
      'farmChanged',
      'drop 2',
      'farmChanged',
    ]);
    stop();
    await bus.publish('task.status', { task_id: 3, status: 'pending' });
    expect(d.calls).toHaveLength(8);
    expect(errors).toEqual([]);
    await bus.close();
  });

  it('announceStatus sends the status to the dispatchers, then the news', async () => {
    const bus = new InProcessBus();
    const seen: string[] = [];
    bus.subscribe('task.status', (m) => seen.push(`status ${m.task_id} ${m.status}`));
    bus.subscribe('task.changed', (m) => seen.push(`news ${m.task_id} ${m.status} ${m.progress}`));
    await announceStatus(bus, 4, 'completed', 100);
    await announceStatus(bus, 5, 'failed');
    expect(seen).toEqual([
      'status 4 completed',
      'news 4 completed 100',
      'status 5 failed',
      'news 5 failed undefined',
    ]);
    await bus.close();
  });
});
