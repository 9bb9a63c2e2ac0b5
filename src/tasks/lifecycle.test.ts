import { describe, expect, it } from 'vitest';
import { DIALECTS, migratedPerDescribe } from '../../test/helpers/db.js';
import type { Lease } from '../clients/registry.js';
import { insertAssignment, listAssignments } from '../storage/assignment-repo.js';
import { findTask, insertTask, listTaskEvents, updateTaskIf } from '../storage/task-repo.js';
import { parseJson } from '../storage/values.js';
import {
  changeByUser,
  claimRanks,
  completeLeases,
  controlAssignment,
  endLease,
  failTask,
  finishTraining,
} from './lifecycle.js';

describe.each(DIALECTS)('transitions on %s', (dialect) => {
  const h = migratedPerDescribe(dialect);
  const NOW = new Date('2030-01-02T03:04:05Z');

  /** A running task with one live assignment per rank. */
  async function running(worldSize = 1, maxAttempts = 3): Promise<{ taskId: number; leases: Lease[] }> {
    const taskId = await insertTask(h.db, {
      type: 'command',
      name: null,
      requirements: '{}',
      config: null,
      priority: 0,
      max_attempts: maxAttempts,
      world_size: worldSize,
      created_by: null,
      now: '2030-01-02 03:00:00',
    });
    await updateTaskIf(h.db, taskId, ['pending'], { status: 'running', attempts: 1 });
    const leases: Lease[] = [];
    for (let rank = 0; rank < worldSize; rank++) {
      const assignmentId = await insertAssignment(h.db, {
        task_id: taskId,
        client_id: `c${rank}`,
        rank,
        attempt: 1,
        at: '2030-01-02 03:00:00',
      });
      leases.push({
        taskId,
        rank,
        attempt: 1,
        assignmentId,
        clientId: `c${rank}`,
        status: 'training',
        progress: 40,
        metrics: null,
        round: null,
        lastWrite: 0,
        lastSample: 0,
        dirty: false,
        worldSize,
      });
    }
    return { taskId, leases };
  }

  it('ends a lease once: a failure retries the task, the repeat changes nothing', async () => {
    const { taskId, leases } = await running();
    const l = leases[0] as Lease;
    expect(await endLease(h.db, l, 'failed', { error_log: 'boom' }, NOW)).toEqual({ kind: 'requeue_task' });
    expect(await endLease(h.db, l, 'failed', { error_log: 'boom' }, NOW)).toEqual({ kind: 'none' });
    expect(await findTask(h.db, taskId)).toMatchObject({ status: 'pending', client_id: null });
    expect((await listAssignments(h.db, taskId))[0]).toMatchObject({ status: 'failed', error: 'boom' });
  });

  it('completes a multi-rank task with its last rank, and re-places a lost one', async () => {
    const { taskId, leases } = await running(2);
    const [a, b] = leases as [Lease, Lease];
    expect(await endLease(h.db, a, 'completed', { error_log: null }, NOW)).toEqual({ kind: 'none' });
    expect((await findTask(h.db, taskId))?.status).toBe('running');
    expect(await endLease(h.db, b, 'lost', { error_log: null }, NOW)).toEqual({
      kind: 'requeue_rank',
      rank: 1,
    });
    expect((await findTask(h.db, taskId))?.error_log).toBe('attempt 1 on c1 (rank 1): client lost');
    const events = await listTaskEvents(h.db, taskId, 10);
    expect(events.map((e) => e.kind)).toEqual(['rank_retry', 'rank_completed']);
  });

  it('completes single-rank tasks together, leaving a cancelled one cancelled', async () => {
    const one = await running();
    const two = await running();
    await updateTaskIf(h.db, two.taskId, ['running'], { status: 'cancelled' });
    const items = [one, two].map((t) => ({
      lease: t.leases[0] as Lease,
      info: { metrics: { acc: 1 }, result: null, error_log: null },
    }));
    const done = await completeLeases(h.db, items, NOW);
    expect(done?.map((i) => i.lease.taskId)).toEqual([one.taskId]);
    expect(await findTask(h.db, one.taskId)).toMatchObject({ status: 'completed', progress: 100 });
    expect(parseJson(await findTask(h.db, one.taskId).then((r) => r?.result))).toEqual({
      metrics: { acc: 1 },
    });
    expect((await findTask(h.db, two.taskId))?.status).toBe('cancelled');
    // Once ended, a lease is not ended again.
    expect(await completeLeases(h.db, items.slice(0, 1), NOW)).toBeNull();
  });

  it('fails only a live task, adding why to its error log', async () => {
    const { taskId } = await running();
    expect(await failTask(h.db, taskId, 'no round can close', NOW)).toBe(true);
    expect(await findTask(h.db, taskId)).toMatchObject({ status: 'failed', error_log: 'no round can close' });
    expect(await failTask(h.db, taskId, 'again', NOW)).toBe(false);
  });

  it('finishes a training: the task completes with its result, its live assignments too', async () => {
    const { taskId } = await running(2);
    await finishTraining(
      h.db,
      { taskId, metrics: { loss: 0.1, round: 3 }, result: { rounds: 3 }, checkpoint: '/ckpt/3' },
      NOW,
    );
    const row = await findTask(h.db, taskId);
    expect(row).toMatchObject({ status: 'completed', progress: 100, checkpoint_path: '/ckpt/3' });
    expect(parseJson(row?.result)).toEqual({ rounds: 3 });
    expect((await listAssignments(h.db, taskId)).map((a) => a.status)).toEqual(['completed', 'completed']);
  });

  it('gives back the attempt of a task that never reached its client', async () => {
    const { taskId, leases } = await running(1, 1);
    const out = await endLease(h.db, leases[0] as Lease, 'undelivered', { error_log: 'client c0 left' }, NOW);
    expect(out).toEqual({ kind: 'requeue_task' });
    expect(await findTask(h.db, taskId)).toMatchObject({ status: 'pending', error_log: null });
    expect(Number((await findTask(h.db, taskId))?.attempts)).toBe(0);
    expect((await listAssignments(h.db, taskId)).map((a) => a.status)).toEqual(['cancelled']);
  });

  it('re-places a rank with its own next attempt, only while the task runs', async () => {
    const { taskId, leases } = await running(2);
    await endLease(h.db, leases[1] as Lease, 'lost', { error_log: null }, NOW);
    const claimed = await claimRanks(h.db, taskId, [{ rank: 1, clientId: 'c9' }], NOW);
    expect(claimed?.attempts).toEqual([2]);
    expect(Number((await findTask(h.db, taskId))?.attempts)).toBe(2);
    const rank1 = (await listAssignments(h.db, taskId)).filter((a) => a.rank === 1);
    expect(rank1.map((a) => [a.client_id, Number(a.attempt), a.status])).toEqual([
      ['c1', 1, 'lost'],
      ['c9', 2, 'assigned'],
    ]);
    // Held again: a second re-placement (another instance, a resume racing a loss) writes nothing.
    expect(await claimRanks(h.db, taskId, [{ rank: 1, clientId: 'c7' }], NOW)).toBeNull();
    expect(await listAssignments(h.db, taskId)).toHaveLength(3);
    await updateTaskIf(h.db, taskId, ['running'], { status: 'paused' });
    expect(await claimRanks(h.db, taskId, [{ rank: 1, clientId: 'c8' }], NOW)).toBeNull();
  });

  it("makes a user's change only from the status it was read in; a retry starts the task over", async () => {
    const { taskId, leases } = await running();
    const change = { taskId, by: 'alice', now: NOW };
    expect(
      await changeByUser(h.db, { ...change, from: 'paused', to: 'cancelled', requested: 'cancelled' }),
    ).toBe(false);
    expect(
      await changeByUser(h.db, { ...change, from: 'running', to: 'cancelled', requested: 'cancelled' }),
    ).toBe(true);
    expect((await findTask(h.db, taskId))?.finished_at).not.toBeNull();
    expect(await controlAssignment(h.db, (leases[0] as Lease).assignmentId, 'stop', NOW)).toBe(true);
    expect(await controlAssignment(h.db, (leases[0] as Lease).assignmentId, 'pause', NOW)).toBe(false);
    expect(
      await changeByUser(h.db, { ...change, from: 'cancelled', to: 'pending', requested: 'pending' }),
    ).toBe(true);
    expect(await findTask(h.db, taskId)).toMatchObject({
      status: 'pending',
      finished_at: null,
      client_id: null,
    });
    expect(Number((await findTask(h.db, taskId))?.attempts)).toBe(0);
    expect((await listTaskEvents(h.db, taskId, 1))[0]).toMatchObject({
      kind: 'pending',
      message: 'cancelled -> pending by alice',
    });
    await expect(
      changeByUser(h.db, { ...change, from: 'pending', to: 'completed', requested: 'completed' }),
    ).rejects.toThrow(/may not/);
  });
});
