import { byPriorityThenAge } from './policy.js';

interface Entry {
  id: number;
  priority: number;
}

/**
 * Pending tasks kept in dispatch order (priority, then age) as they arrive, so a dispatch
 * pass reads the head of the queue instead of sorting every pending task each time.
 * Removal is lazy: entries stay in the order array until the next compaction.
 */
export class PendingQueue<T extends Entry> {
  private readonly byId = new Map<number, T>();
  private order: T[] = [];

  get size(): number {
    return this.byId.size;
  }

  get(id: number): T | undefined {
    return this.byId.get(id);
  }

  has(id: number): boolean {
    return this.byId.has(id);
  }

  values(): IterableIterator<T> {
    return this.byId.values();
  }

  set(entry: T): void {
    this.byId.set(entry.id, entry);
    // Binary search for the insertion point; new work usually lands at the end.
    let lo = 0;
    let hi = this.order.length;
    const last = this.order[hi - 1];
    if (last && byPriorityThenAge(last as never, entry as never) > 0) {
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (byPriorityThenAge(this.order[mid] as never, entry as never) <= 0) lo = mid + 1;
        else hi = mid;
      }
      this.order.splice(lo, 0, entry);
    } else {
      this.order.push(entry);
    }
    this.maybeCompact();
  }

  delete(id: number): boolean {
    const had = this.byId.delete(id);
    if (had) this.maybeCompact();
    return had;
  }

  /** Live entries in dispatch order. */
  *ordered(): Generator<T> {
    for (const e of this.order) if (this.byId.get(e.id) === e) yield e;
  }

  private maybeCompact(): void {
    if (this.order.length > 64 && this.order.length > 2 * this.byId.size) {
      this.order = this.order.filter((e) => this.byId.get(e.id) === e);
    }
  }
}
