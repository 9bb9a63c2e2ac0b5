import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS, openMigratedTestDatabase, taskRow } from '../../../test/helpers/db.js';
import { InProcessBus } from '../../bus/bus.js';
import { ClientRegistry } from '../../clients/registry.js';
import { silentLogger } from '../../observability/logger.js';
import { insertTasks, updateTaskIf } from '../../storage/task-repo.js';
import { latestRound } from '../../storage/training-repo.js';
import { WriteQueue } from '../../storage/write-queue.js';
import { RoundCoordinator } from './coordinator.js';
import { TrainingPaths } from './paths.js';
import { dbDate } from './run.js';

/** Waits for `cond`, checking every 5 ms, for at most 5 s. */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + 5000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe.each(DIALECTS)('the round coordinator and its rounds on %s', (dialect) => {
  let db: Awaited<ReturnType<typeof openMigratedTestDatabase>>;
  let writes: WriteQueue;
  let bus: InProcessBus;
  let coordinator: RoundCoordinator;
  let paths: TrainingPaths;
  let t = Date.parse('2030-01-02T03:04:05Z');
  const clock = { now: () => new Date(t) };

  beforeAll(async () => {
    db = await openMigratedTestDatabase(dialect);
    writes = new WriteQueue(db.h.db, silentLogger());
    paths = new TrainingPaths(join(db.tdb.dir, 'models'), join(db.tdb.dir, 'checkpoints'));
  });
  afterEach(async () => {
    await coordinator?.stop();
    await bus?.close();
  });
  afterAll(async () => {
    await writes?.close();
    await db?.close();
  });

  /** A started coordinator and a running training task of 2 ranks (600 s rounds); its id. */
  async function setUp(): Promise<number> {
    bus = new InProcessBus();
    coordinator = new RoundCoordinator({
      db: db.h.db,
      writes,
      registry: new ClientRegistry(),
      bus,
      paths,
      clock,
      logger: silentLogger(),
      checkpointFrequency: 1,
    });
    await coordinator.start();
    const config = {
      rounds: 2,
      epochs: 1,
      batch_size: 1,
      aggregation: { strategy: 'fedavg' },
      quorum: 2,
      round_deadline_s: 600,
      shards: 'even',
      seed: 1,
    };
    const [id] = await insertTasks(db.h.db, [
      taskRow({ type: 'command', name: 'training', config: JSON.stringify(config), world_size: 2 }),
    ]);
    await updateTaskIf(db.h.db, id!, ['pending'], { status: 'running' });
    return id!;
  }

  it('opens round 1, pauses its deadline and resumes it with the time it had left', async () => {
    const id = await setUp();
    const round = await coordinator.round(id);
    expect(round).toMatchObject({ number: 1, phase: { kind: 'open' }, accepting: true });
    expect(round!.deadlineAt.getTime()).toBe(t + 600_000);
    expect(await coordinator.round(id)).toBe(round);

    t += 100_000;
    await bus.publish('task.control', { task_id: id, action: 'pause' });
    expect(round!.phase).toEqual({ kind: 'paused', leftMs: 500_000 });
    expect(round!.accepting).toBe(true);

    t += 3_600_000;
    await bus.publish('task.control', { task_id: id, action: 'resume' });
    expect(round!.phase.kind).toBe('open');
    expect(round!.deadlineAt.getTime()).toBe(t + 500_000);
    await until(async () => {
      const row = await latestRound(db.h.db, id);
      return dbDate(row?.deadline_at).getTime() === t + 500_000;
    });
  });

  it('ends the round on stop and requeue; a delete also removes the task files', async () => {
    const id = await setUp();
    const first = await coordinator.round(id);
    await bus.publish('task.control', { task_id: id, action: 'stop' });
    expect(first!.phase).toEqual({ kind: 'ended' });
    expect(first!.accepting).toBe(false);
    // The task still runs in the database: asked again, its round is loaded again.
    const second = await coordinator.round(id);
    expect(second).not.toBe(first);
    expect(second).toMatchObject({ number: 1, phase: { kind: 'open' } });
    await bus.publish('task.control', { task_id: id, action: 'requeue' });
    expect(second!.phase.kind).toBe('ended');

    await coordinator.round(id);
    mkdirSync(paths.taskDir(id), { recursive: true });
    writeFileSync(join(paths.taskDir(id), 'global-round-2.safetensors'), 'x');
    await bus.publish('task.control', { task_id: id, action: 'delete' });
    await until(() => !existsSync(paths.taskDir(id)));
  });

  it('refuses an update for another round, and one into an ended round', async () => {
    const id = await setUp();
    const round = (await coordinator.round(id))!;
    let checked = 0;
    const incoming = (n: number) => ({
      round: n,
      rank: 0,
      clientId: 'c0',
      header: { tensors: [], metadata: {}, dataOffset: 0 } as never,
      check: async () => void checked++,
      place: () => Promise.reject(new Error('not reached')),
    });
    await expect(round.accept(incoming(2))).rejects.toMatchObject({ code: 'round_closed' });
    coordinator.drop(id);
    await expect(round.accept(incoming(1))).rejects.toMatchObject({ code: 'round_closed' });
    expect(checked).toBe(0);
  });

  it('leaves a task that is not a running training task without a round', async () => {
    await setUp();
    const [plain] = await insertTasks(db.h.db, [taskRow({ name: 'plain' })]);
    expect(await coordinator.round(plain!)).toBeUndefined();
    expect(await latestRound(db.h.db, plain!)).toBeUndefined();
  });
});
