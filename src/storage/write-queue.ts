import type { Kysely, Transaction } from 'kysely';
import type { Logger } from '../observability/logger.js';
import type { Database } from './schema.js';

type Op<T> = (trx: Transaction<Database>) => Promise<T>;

interface Pending {
  op: Op<unknown>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/**
 * Group commit: the writes queued during one event-loop turn run in one transaction,
 * and each caller's promise settles only after that commit. Callers acknowledge to
 * clients after the promise resolves, so a crash never loses anything acknowledged,
 * while hundreds of results a second cost a handful of commits.
 *
 * If a batch fails as a whole, its operations are retried one transaction each, so one
 * bad write cannot fail the others.
 */
export class WriteQueue {
  private queue: Pending[] = [];
  private scheduled = false;
  private running: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly logger: Logger,
    /** Most operations in one transaction. */
    private readonly maxBatch = 500,
  ) {}

  /** Runs `op` inside the next group transaction; resolves after commit. */
  run<T>(op: Op<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('write queue closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op: op as Op<unknown>, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.running = this.running.then(() => this.flush());
        });
      }
    });
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

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      const results: unknown[] = [];
      try {
        await this.db.transaction().execute(async (trx) => {
          results.length = 0;
          for (const p of batch) results.push(await p.op(trx));
        });
        batch.forEach((p, i) => p.resolve(results[i]));
      } catch (err) {
        if (batch.length === 1) {
          batch[0]?.reject(err);
          continue;
        }
        this.logger.warn({ err, size: batch.length }, 'group commit failed; retrying one by one');
        for (const p of batch) {
          try {
            p.resolve(await this.db.transaction().execute((trx) => p.op(trx)));
          } catch (e) {
            p.reject(e);
          }
        }
      }
    }
  }
}
