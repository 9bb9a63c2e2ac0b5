import { describe, expect, it } from 'vitest';
import { migratedPerDescribe, taskRow } from '../../test/helpers/db.js';
import { inRetriedTransaction, type Executor } from './executor.js';
import { insertTasks } from './task-repo.js';
import { WriteQueue } from './write-queue.js';
import { silentLogger } from '../observability/logger.js';

// A real deadlock on MariaDB: two transactions take two rows in opposite orders. InnoDB rolls
// one back; run again, it goes through, and neither caller sees an error.

describe('transactions rolled back for a deadlock, on mysql', () => {
  const t = migratedPerDescribe('mysql');

  type Run = (fn: (trx: Executor) => Promise<void>) => Promise<void>;

  /**
   * Two transactions that each lock one task row, wait for the other to do the same, then want
   * the other's. The second also changes the rows in `heavier` first: InnoDB rolls back the
   * transaction that changed fewer rows, so the first is the victim.
   */
  function crossed(first: Run, second: Run, [a, b, ...heavier]: number[]) {
    let ready = 0;
    let both: () => void = () => undefined;
    const met = new Promise<void>((resolve) => (both = resolve));
    const runs = [0, 0];
    const side = (run: Run, i: number, mine: number, theirs: number, extra: number[]) =>
      run(async (trx) => {
        runs[i]!++;
        // One row at a time by its key: a scan (\`IN\` over a tiny table) would lock rows it passes.
        const take = async (ids: number[]) => {
          for (const id of ids)
            await trx
              .updateTable('tasks')
              .set({ priority: i + 1 })
              .where('id', '=', id)
              .execute();
        };
        if (extra.length > 0) await take(extra);
        await take([mine]);
        if (++ready === 2) both();
        await met;
        await take([theirs]);
      });
    return {
      done: Promise.allSettled([side(first, 0, a!, b!, []), side(second, 1, b!, a!, heavier)]),
      runs,
    };
  }

  const rows = async () => insertTasks(t.db, [taskRow(), taskRow(), taskRow(), taskRow(), taskRow()]);
  const plain: Run = (fn) => t.db.transaction().execute(fn);

  it('runs the victim again, so both transactions commit', async () => {
    const { done, runs } = crossed((fn) => inRetriedTransaction(t.db, fn), plain, await rows());
    const results = await done;
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    // The victim ran twice: the deadlock happened and was answered.
    expect(runs).toEqual([2, 1]);
  });

  it('fails as before without the retry: the deadlock is real', async () => {
    const [first, second] = await crossed(plain, plain, await rows()).done;
    expect(second.status).toBe('fulfilled');
    expect(first.status).toBe('rejected');
    expect(((first as PromiseRejectedResult).reason as { errno?: number }).errno).toBe(1213);
  });

  it('does not run again a transaction that failed for its own reason', async () => {
    let runs = 0;
    const bad = inRetriedTransaction(t.db, async (trx) => {
      runs++;
      await trx
        .updateTable('tasks')
        .set({ status: 'no-such-status' as never })
        .execute();
    });
    await expect(bad).rejects.toThrow();
    expect(runs).toBe(1);
  });

  it('commits a group commit whose transaction was a deadlock victim', async () => {
    const writes = new WriteQueue(t.db, silentLogger());
    try {
      const { done, runs } = crossed((fn) => writes.run(fn), plain, await rows());
      expect((await done).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
      expect(runs).toEqual([2, 1]);
    } finally {
      await writes.close();
    }
  });
});
