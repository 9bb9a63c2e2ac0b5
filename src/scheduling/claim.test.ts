import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS, openMigratedTestDatabase, taskRow } from '../../test/helpers/db.js';
import { silentLogger } from '../observability/logger.js';
import { listAssignments } from '../storage/assignment-repo.js';
import type { DatabaseHandle } from '../storage/db.js';
import { findTask, insertTasks, listTaskEvents, updateTaskIf } from '../storage/task-repo.js';
import { WriteQueue } from '../storage/write-queue.js';
import { claimTasks } from './claim.js';

describe.each(DIALECTS)('set-based claims on %s', (dialect) => {
  let db: Awaited<ReturnType<typeof openMigratedTestDatabase>>;
  let h: DatabaseHandle;
  let writes: WriteQueue;

  beforeAll(async () => {
    db = await openMigratedTestDatabase(dialect);
    h = db.h;
    writes = new WriteQueue(h.db, silentLogger());
  });
  afterAll(async () => {
    await writes?.close();
    await db?.close();
  });

  const row = (name: string) => taskRow({ name });

  it('claims many tasks in one commit; one no longer pending loses alone, the others win', async () => {
    const ids = await insertTasks(h.db, ['a', 'b', 'c', 'd'].map(row));
    // A cancel got to task c first: the batch's UPDATE misses it and is retried claim by claim.
    await updateTaskIf(h.db, ids[2] as number, ['pending'], { status: 'cancelled' });
    const now = new Date('2030-01-02T03:04:06Z');
    const claimed = await Promise.all(
      ids.map((id, i) =>
        writes.submit(claimTasks, {
          taskId: id,
          placements: [{ taskId: id, rank: 0, clientId: `w${i}` }],
          attempts: 0,
          now,
        }),
      ),
    );
    expect(claimed[2]).toBeNull();
    for (const i of [0, 1, 3]) {
      const c = claimed[i];
      expect(c?.attempts).toEqual([1]);
      const assignments = await listAssignments(h.db, ids[i] as number);
      expect(assignments.map((a) => [Number(a.id), a.client_id, Number(a.attempt)])).toEqual([
        [c?.ids[0], `w${i}`, 1],
      ]);
      expect(await findTask(h.db, ids[i] as number)).toMatchObject({ status: 'running', client_id: `w${i}` });
      const events = await listTaskEvents(h.db, ids[i] as number, 10);
      expect(events.map((e) => e.kind)).toEqual(['assigned']);
    }
    expect(await listAssignments(h.db, ids[2] as number)).toEqual([]);
    // Claiming again (a stale queue entry) wins nothing and writes nothing.
    const again = await writes.submit(claimTasks, {
      taskId: ids[0] as number,
      placements: [{ taskId: ids[0] as number, rank: 0, clientId: 'w9' }],
      attempts: 0,
      now,
    });
    expect(again).toBeNull();
    expect(await listAssignments(h.db, ids[0] as number)).toHaveLength(1);
  });
});
