import { inRetriedTransaction, isUniqueViolation, type Executor } from './executor.js';
import type { Logger } from '../observability/logger.js';
import { insertTaskEvents, type NewTaskEvent } from './task-repo.js';

type Op<T> = (trx: Executor) => Promise<T>;

/**
 * A kind of write whose operations are done together: every item of that kind queued for
 * one group commit goes to `run` at once, which writes them with a few set-based
 * statements (a multi-row INSERT, an `UPDATE ... WHERE id IN (...)`) instead of a few
 * statements per item. `run` returns one result per item, in order. A row that loses a
 * conditional update is a result (say `null`), not an error: an error fails the batch,
 * which is then retried item by item so that one bad row cannot fail the others.
 */
export interface BatchWrite<I, O> {
  readonly name: string;
  run(trx: Executor, items: readonly I[], commit: GroupCommit): Promise<O[]>;
}

/** What the batches of one group commit share: their task events, written in one INSERT at its end. */
export interface GroupCommit {
  events: NewTaskEvent[];
}

/**
 * Thrown by a batch whose set-based statement did not change every row it expected (a row
 * changed meanwhile: a cancel racing a claim, say). The group commit is rolled back and
 * each operation retried alone, where the outcome of every row is known exactly.
 */
export class BatchConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BatchConflict';
  }
}

interface Pending {
  /** A batch kind, or null for a plain operation. */
  kind: BatchWrite<unknown, unknown> | null;
  op: Op<unknown> | null;
  item: unknown;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/**
 * Group commit: the writes queued during one event-loop turn run in one transaction,
 * and each caller's promise settles only after that commit. Callers acknowledge to
 * clients after the promise resolves, so a crash never loses anything acknowledged,
 * while thousands of results a second cost a handful of commits.
 *
 * Plain operations (`run`) issue their own statements; batched ones (`submit`) share
 * set-based statements with the other items of their kind in the same commit. Within a
 * commit the groups run in the order their first item was queued (writes queued in the
 * same turn were concurrent, so none may depend on another's order).
 *
 * If a batch fails as a whole, its operations are retried one transaction each, so one
 * bad write cannot fail the others. A transaction the database rolls back as a deadlock's
 * victim runs again as it was (`inRetriedTransaction`): operations must have no effect
 * outside their transaction.
 */
export class WriteQueue {
  private queue: Pending[] = [];
  private scheduled = false;
  private running: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly db: Executor,
    private readonly logger: Logger,
    /** Most operations in one transaction. */
    private readonly maxBatch = 500,
  ) {}

  /** Runs `op` inside the next group transaction; resolves after commit. */
  run<T>(op: Op<T>): Promise<T> {
    return this.enqueue<T>(null, op as Op<unknown>, undefined);
  }

  /** Writes `item` with the other items of `kind` in the next group transaction; resolves after commit. */
  submit<I, O>(kind: BatchWrite<I, O>, item: I): Promise<O> {
    return this.enqueue<O>(kind as BatchWrite<unknown, unknown>, null, item);
  }

  /** Waits for every queued write, then refuses new ones. */
  async close(): Promise<void> {
    while (this.queue.length > 0 || this.scheduled) {
      await new Promise((r) => setImmediate(r));
      await this.running;
    }
    await this.running;
    this.closed = true;
  }

  private enqueue<T>(kind: BatchWrite<unknown, unknown> | null, op: Op<unknown> | null, item: unknown) {
    if (this.closed) return Promise.reject(new Error('write queue closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind, op, item, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.running = this.running.then(() => this.flush());
        });
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      const groups = groupByKind(batch);
      const results = new Map<Pending, unknown>();
      try {
        await inRetriedTransaction(this.db, async (trx) => {
          results.clear();
          const commit: GroupCommit = { events: [] };
          for (const g of groups) {
            const out = await runGroup(trx, g, commit);
            g.forEach((p, i) => results.set(p, out[i]));
          }
          await insertTaskEvents(trx, commit.events);
        });
        for (const p of batch) p.resolve(results.get(p));
      } catch (err) {
        if (batch.length === 1) {
          batch[0]?.reject(err);
          continue;
        }
        if (err instanceof BatchConflict || isUniqueViolation(err))
          this.logger.debug({ err, size: batch.length }, 'batch conflict');
        else this.logger.warn({ err, size: batch.length }, 'group commit failed; retrying one by one');
        for (const p of batch) {
          try {
            const alone = async (trx: Executor) => {
              const commit: GroupCommit = { events: [] };
              const [out] = await runGroup(trx, [p], commit);
              await insertTaskEvents(trx, commit.events);
              return out;
            };
            p.resolve(await inRetriedTransaction(this.db, alone));
          } catch (e) {
            p.reject(e);
          }
        }
      }
    }
  }
}

/** Plain operations stay alone; the items of one batch kind form one group, where its first item was. */
function groupByKind(batch: Pending[]): Pending[][] {
  const groups: Pending[][] = [];
  const byKind = new Map<BatchWrite<unknown, unknown>, Pending[]>();
  for (const p of batch) {
    if (!p.kind) {
      groups.push([p]);
      continue;
    }
    let g = byKind.get(p.kind);
    if (!g) {
      byKind.set(p.kind, (g = []));
      groups.push(g);
    }
    g.push(p);
  }
  return groups;
}

async function runGroup(trx: Executor, g: Pending[], commit: GroupCommit): Promise<unknown[]> {
  const first = g[0] as Pending;
  if (!first.kind) return [await (first.op as Op<unknown>)(trx)];
  const out = await first.kind.run(
    trx,
    g.map((p) => p.item),
    commit,
  );
  if (out.length !== g.length)
    throw new Error(`${first.kind.name}: ${out.length} results for ${g.length} items`);
  return out;
}
