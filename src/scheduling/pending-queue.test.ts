import { describe, expect, it } from 'vitest';
import { PendingQueue } from './pending-queue.js';

describe('PendingQueue', () => {
  it('yields entries by priority then age, skipping removed and replaced ones', () => {
    const q = new PendingQueue<{ id: number; priority: number; tag?: string }>();
    q.set({ id: 3, priority: 0 });
    q.set({ id: 1, priority: 0 });
    q.set({ id: 2, priority: 5 });
    q.set({ id: 4, priority: -1 });
    expect([...q.ordered()].map((e) => e.id)).toEqual([2, 1, 3, 4]);
    q.delete(1);
    q.set({ id: 3, priority: 9, tag: 'new' });
    expect([...q.ordered()].map((e) => e.id)).toEqual([3, 2, 4]);
    expect(q.get(3)?.tag).toBe('new');
    expect(q.size).toBe(3);
  });

  it('stays correct through many removals (compaction)', () => {
    const q = new PendingQueue<{ id: number; priority: number }>();
    for (let i = 1; i <= 1000; i++) q.set({ id: i, priority: i % 3 });
    for (let i = 1; i <= 1000; i += 2) q.delete(i);
    const ids = [...q.ordered()].map((e) => e.id);
    expect(ids).toHaveLength(500);
    const expected = Array.from({ length: 500 }, (_, k) => 2 * (k + 1)).sort(
      (a, b) => (b % 3) - (a % 3) || a - b,
    );
    expect(ids).toEqual(expected);
  });
});
