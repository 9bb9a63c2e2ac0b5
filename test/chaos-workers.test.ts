import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignmentsOf, type ChaosFigure, type WorkerProcess } from './helpers/chaos.js';
import { chaosHooks, cleanups, figures, random } from './helpers/chaos-suite.js';
import { clientIdOf, startFarm, taskOf, worker, type Farm } from './helpers/chaos-farm.js';
import { sleep, waitFor } from './helpers/wait.js';
import { createTestDatabase } from './helpers/db.js';
import { startTcpProxy } from './helpers/tcp-proxy.js';

/**
 * The chaos suite's worker cases (issue 6): real `ai-farm server` and `ai-farm worker`
 * processes, a worker killed, stopped past its lease, or cut off by a network path that drops
 * its traffic, at moments drawn from a seeded PRNG (CHAOS_SEED replays a run). Each task must
 * complete once, on the other worker. docs/operations.md, "Chaos suite".
 */
chaosHooks();

/**
 * A command task that holds (progress 5%) until the file $GO exists, then reports five
 * steps 0.2 s apart and a result: the test decides when work can finish. Bounded: it gives
 * up holding after two minutes.
 */
const GATED_COMMAND =
  'n=0; while [ ! -e "$GO" ] && [ $n -lt 600 ]; do n=$((n+1)); echo \'{"progress": 5}\'; sleep 0.2; done; ' +
  'i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo "{\\"progress\\": $((i*20))}"; sleep 0.2; done; ' +
  `echo '{"result": {"done": 1}}'`;

/** Waits for the task that worker `a` lost to complete on worker `b`. */
const completedElsewhere = (farm: Farm, taskId: number) =>
  waitFor(
    'the task to complete on the other worker',
    async () => (await taskOf(farm, taskId)).status === 'completed',
    60_000,
  );

/**
 * A command task held by worker `a` (running, progress reported), and a second worker `b`
 * registered only then, so the retry can only go to `b`.
 */
async function taskRunningOn(farm: Farm, a: WorkerProcess, bName: string) {
  const aId = await clientIdOf(farm, a);
  const go = join(farm.db.dir, `go-${bName}`);
  const created = await farm.api('POST', '/api/tasks', {
    type: 'command',
    requirements: {},
    config: { command: GATED_COMMAND, env: { GO: go } },
  });
  expect(created.status).toBe(201);
  const taskId = created.body.id as number;
  await waitFor(
    'the task to run on the first worker',
    async () => {
      const t = await taskOf(farm, taskId);
      return t.status === 'running' && t.progress > 0;
    },
    30_000,
  );
  const first = await assignmentsOf(farm.server.url, farm.admin, taskId);
  expect(first.map((x) => [x.client_id, x.attempt])).toEqual([[aId, 1]]);
  const b = worker(farm, bName);
  const bId = await clientIdOf(farm, b);
  /** Lets the task's command (on whichever worker) finish. */
  const release = () => writeFileSync(go, 'go');
  return { taskId, aId, b, bId, release };
}

/** The task completed, once: one completed attempt on `bId`, `aId`'s attempt lost. */
async function expectCompletedOnceElsewhere(farm: Farm, taskId: number, aId: string, bId: string) {
  const t = await taskOf(farm, taskId);
  expect(t.status).toBe('completed');
  expect(t.result).toMatchObject({ done: 1 });
  const rows = await assignmentsOf(farm.server.url, farm.admin, taskId);
  const completed = rows.filter((r) => r.status === 'completed');
  expect(completed).toHaveLength(1);
  expect(completed[0]).toMatchObject({ client_id: bId, attempt: 2 });
  expect(rows.find((r) => r.attempt === 1)).toMatchObject({ client_id: aId, status: 'lost' });
  expect(rows).toHaveLength(2);
  return rows;
}

/** The figure of a case run once that lost and duplicated nothing. */
const oneCycle = (name: string, recoverMs: number, note?: string): ChaosFigure => ({
  name,
  cycles: 1,
  lost: 0,
  duplicated: 0,
  recoverMs: [recoverMs],
  ...(note === undefined ? {} : { note }),
});

/** Worker `a` reports its result late; the server refuses it as stale (as the worker prints it). */
async function lateResultRefused(a: WorkerProcess, taskId: number) {
  await waitFor('the late result to be refused', () => /result not accepted/.test(a.output()), 60_000);
  expect(a.output()).toMatch(
    new RegExp(`task ${taskId}: result not accepted \\(task ${taskId} is not assigned`),
  );
}

describe('chaos: workers', () => {
  /** A server on a fresh SQLite database whose leases end 3 s after their worker goes quiet. */
  const workerChaosFarm = async () => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    return startFarm(db, { CONNECTION_TIMEOUT: '3' });
  };

  it('a worker killed with SIGKILL mid-task: the task is retried on another worker and completes once', async () => {
    const farm = await workerChaosFarm();
    const a = worker(farm, 'killed');
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'survivor');
    await sleep(random() * 1000);
    const killedAt = Date.now();
    a.signal('SIGKILL');
    release();
    await completedElsewhere(farm, taskId);
    const recoverMs = Date.now() - killedAt;
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(oneCycle('worker SIGKILL mid-task', recoverMs));
    expect(farm.server.alive()).toBe(true);
  }, 120_000);

  it('a worker stopped (SIGSTOP) past its lease: its late result is refused as stale, the task completes once elsewhere', async () => {
    const farm = await workerChaosFarm();
    const a = worker(farm, 'frozen');
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'healthy');
    await sleep(random() * 500);
    const stoppedAt = Date.now();
    a.signal('SIGSTOP');
    cleanups.push(async () => a.signal('SIGCONT'));
    // Its command goes on and finishes while the worker is stopped.
    release();
    await completedElsewhere(farm, taskId);
    const recoverMs = Date.now() - stoppedAt;
    // The stopped worker's command has finished meanwhile: on SIGCONT it reports its result.
    a.signal('SIGCONT');
    await lateResultRefused(a, taskId);
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(
      oneCycle('worker SIGSTOP past its lease', recoverMs, 'late task_result refused (stale_attempt)'),
    );
    expect(farm.server.alive()).toBe(true);
  }, 120_000);

  it("a network path that drops a worker's traffic: the heartbeat timeout frees its lease, the task completes once elsewhere", async () => {
    const farm = await workerChaosFarm();
    const port = Number(new URL(farm.server.url).port);
    const proxy = await startTcpProxy('127.0.0.1', port);
    cleanups.push(() => proxy.close());
    const a = worker(farm, 'partitioned', `http://127.0.0.1:${proxy.port}`);
    const { taskId, aId, bId, release } = await taskRunningOn(farm, a, 'connected');
    await sleep(random() * 500);
    const cutAt = Date.now();
    proxy.freeze();
    release();
    await waitFor(
      'the lease to move to the other worker',
      async () => {
        const rows = await assignmentsOf(farm.server.url, farm.admin, taskId);
        return rows.some((r) => r.client_id === bId);
      },
      60_000,
    );
    const replacedMs = Date.now() - cutAt;
    await completedElsewhere(farm, taskId);
    const rows = await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    expect(String(rows[0].error)).toMatch(/silent/i);
    // The partition heals: the worker comes back, and its result is refused as stale.
    proxy.thaw();
    await lateResultRefused(a, taskId);
    await expectCompletedOnceElsewhere(farm, taskId, aId, bId);
    figures.push(
      oneCycle(
        'worker traffic blackholed',
        replacedMs,
        `lease re-placed ${replacedMs} ms after the cut (CONNECTION_TIMEOUT 3 s)`,
      ),
    );
  }, 150_000);
});
