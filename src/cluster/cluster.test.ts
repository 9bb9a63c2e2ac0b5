import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectedClientRow,
  createTestDatabase,
  DIALECTS,
  type TestDatabase,
} from '../../test/helpers/db.js';
import { InProcessBus } from '../bus/bus.js';
import { ClientRegistry } from '../clients/registry.js';
import { silentLogger } from '../observability/logger.js';
import { insertAssignment } from '../storage/assignment-repo.js';
import { findClient, upsertClient } from '../storage/client-repo.js';
import { openDatabase, resolveDatabaseTarget, type DatabaseHandle } from '../storage/db.js';
import { migrateToLatest } from '../storage/migrate.js';
import { insertTask } from '../storage/task-repo.js';
import { toDbTime, type Clock } from '../storage/values.js';
import { waitFor } from '../../test/helpers/wait.js';
import type { ServerMessage } from '../api/protocol.js';
import { provisionalLease } from '../scheduling/claim.js';
import { claimClient, orphanClients } from './cluster-repo.js';
import { Cluster } from './cluster.js';

/** A clock each instance moves on its own: an instance whose clock stands still stops beating. */
function manualClock(start: number): Clock & { advance(ms: number): void } {
  let now = start;
  return { now: () => new Date(now), advance: (ms) => void (now += ms) };
}

/**
 * The instance registry on a real database, once per dialect: heartbeats, one owner per
 * training task, take-over of a dead instance's task and clients (each by one instance only),
 * and the lease check for uploads that reach an instance other than the socket's.
 */
describe.each(DIALECTS)('cluster on %s', (dialect) => {
  let tdb: TestDatabase;
  let h: DatabaseHandle;
  const started: Cluster[] = [];

  beforeAll(async () => {
    tdb = await createTestDatabase(dialect);
    h = await openDatabase(
      resolveDatabaseTarget({ DATABASE_URL: tdb.url, db_config: null, DATA_DIR: tdb.dir }),
    );
    expect(await migrateToLatest(h.db, h.dialect)).toContain('006-instances');
  });
  afterAll(async () => {
    for (const c of started) await c.stop();
    await h?.close();
    await tdb?.drop();
  });

  const T0 = Date.UTC(2030, 0, 2, 3, 4, 5);
  const at = toDbTime(new Date(T0));
  const commandTask = (worldSize: number) =>
    insertTask(h.db, {
      type: 'command',
      name: null,
      requirements: '{}',
      config: '{}',
      priority: 0,
      max_attempts: 3,
      world_size: worldSize,
      created_by: null,
      now: at,
    });
  /** A client row connected through `instance` with a worker token. */
  const connectedClient = (id: string, tokenId: string, instance: string) =>
    upsertClient(
      h.db,
      connectedClientRow(id, instance, at, {
        cpu_info: JSON.stringify({ cores_logical: 4 }),
        ram_info: JSON.stringify({ total: 2 ** 34 }),
        token_id: tokenId,
      }),
    );
  function instance(id: string, clock: Clock, bus = new InProcessBus()) {
    const registry = new ClientRegistry();
    const cluster = new Cluster({
      db: h.db,
      registry,
      bus,
      clock,
      logger: silentLogger(),
      instanceId: id,
      connectionTimeout: 60,
      maxTasksPerClient: 1,
    });
    started.push(cluster);
    return { cluster, registry };
  }

  it('gives each training task one owner and moves a dead instance’s task and clients to one live one', async () => {
    const clockA = manualClock(T0);
    const clockB = manualClock(T0);
    const clockC = manualClock(T0);
    const a = instance('inst-a', clockA);
    const b = instance('inst-b', clockB);
    const c = instance('inst-c', clockC);
    await a.cluster.start();
    await b.cluster.start();
    await c.cluster.start();

    const taskId = await commandTask(2);
    expect(await a.cluster.acquire(taskId)).toBe(true);
    expect(await b.cluster.acquire(taskId)).toBe(false);
    expect(await a.cluster.holds(h.db, taskId)).toBe(true);

    // A client connected through A, holding rank 1.
    await connectedClient('cw1', 'tok-1', 'inst-a');
    await insertAssignment(h.db, { task_id: taskId, client_id: 'cw1', rank: 1, attempt: 2, at });
    // Through another instance, an upload finds the lease in the database.
    expect(await b.cluster.remoteLease('cw1', taskId)).toEqual({ tokenId: 'tok-1', rank: 1, attempt: 2 });
    expect(await b.cluster.remoteLease('cw1', taskId + 1)).toBeNull();

    // A stops beating; B and C go on past CONNECTION_TIMEOUT. A's client goes to exactly one of them.
    // B and C beat half-way first, so that at the concurrent beat each sees the other live
    // whichever heartbeat commits first (a jump of a whole timeout at once would let each
    // judge the other dead by its start-up heartbeat, and take the client from it in turn).
    clockB.advance(30_000);
    clockC.advance(30_000);
    await Promise.all([b.cluster.tick(), c.cluster.tick()]);
    expect(b.registry.get('cw1') ?? c.registry.get('cw1')).toBeUndefined();
    clockB.advance(31_000);
    clockC.advance(31_000);
    await Promise.all([b.cluster.tick(), c.cluster.tick()]);
    const holders = [b, c].filter((x) => x.registry.get('cw1')?.leases.get(taskId)?.rank === 1);
    expect(holders).toHaveLength(1);
    const holder = holders[0]!;
    const row = await findClient(h.db, 'cw1');
    expect(row?.instance_id).toBe(holder === b ? 'inst-b' : 'inst-c');
    expect(Number(row?.connected)).toBe(0);
    // An instance that read cw1 as A's before the take-over (say it believed the winner dead
    // too) cannot take it again: the claim is a compare-and-set on the holder it read.
    expect(await claimClient(h.db, { clientId: 'cw1', heldBy: 'inst-a' }, 'inst-c')).toBe(false);
    expect(await claimClient(h.db, { clientId: 'cw1', heldBy: null }, 'inst-c')).toBe(false);
    // Held without a socket: the sweeper releases it unless the client comes back.
    expect(holder.registry.get('cw1')?.send).toBeNull();
    // Not connected anywhere now: no upload is accepted for it.
    expect(await b.cluster.remoteLease('cw1', taskId)).toBeNull();

    // The training task: one of the live instances takes it over, the other cannot.
    const won = await Promise.all([b.cluster.acquire(taskId), c.cluster.acquire(taskId)]);
    expect(won.filter(Boolean)).toHaveLength(1);
    expect(await a.cluster.holds(h.db, taskId)).toBe(false);

    // A comes back to life: it was declared dead, so it joins again and owns nothing.
    clockA.advance(61_000);
    await a.cluster.tick();
    expect(await a.cluster.acquire(taskId)).toBe(false);
  });

  it('lets one instance take a client over even when two live instances each believe the other dead', async () => {
    const taskId = await commandTask(1);
    await connectedClient('cw2', 'tok-2', 'inst-gone');
    await insertAssignment(h.db, { task_id: taskId, client_id: 'cw2', rank: 0, attempt: 1, at });
    // Split views (a slow heartbeat, skewed clocks): X thinks only X is live, Y only Y.
    const seenByX = (await orphanClients(h.db, ['inst-x'])).filter((o) => o.clientId === 'cw2');
    const seenByY = (await orphanClients(h.db, ['inst-y'])).filter((o) => o.clientId === 'cw2');
    expect(seenByX).toEqual([{ clientId: 'cw2', heldBy: 'inst-gone' }]);
    expect(seenByY).toEqual(seenByX);
    const won = await Promise.all([
      claimClient(h.db, seenByX[0]!, 'inst-x'),
      claimClient(h.db, seenByY[0]!, 'inst-y'),
    ]);
    expect(won.filter(Boolean)).toHaveLength(1);
    expect((await findClient(h.db, 'cw2'))?.instance_id).toBe(won[0] ? 'inst-x' : 'inst-y');
  });

  it('delivers a rank another instance claimed to a client whose own claim of the task is still in flight', async () => {
    const bus = new InProcessBus();
    const a = instance('inst-p', manualClock(T0), bus);
    await a.cluster.start();
    const taskId = await commandTask(2);
    await connectedClient('cw3', 'tok-3', 'inst-p');
    const got: ServerMessage[] = [];
    a.registry.add({
      id: 'cw3',
      tokenId: 'tok-3',
      hardware: { cpuCores: 4, ramGb: 16, gpuMemoryGb: [] },
      maxTasks: 1,
      cordoned: false,
      send: (m) => got.push(m),
      owner: null,
      lastSeen: T0,
      leases: new Map(),
      utilization: null,
    });
    // This instance's own pass placed the task on cw3 too: its provisional lease (assignment 0)
    // waits for a claim that will fail, as the other instance's claim committed first.
    const provisional = provisionalLease({ taskId, rank: 0, clientId: 'cw3' });
    a.registry.get('cw3')!.leases.set(taskId, provisional);
    const id = await insertAssignment(h.db, { task_id: taskId, client_id: 'cw3', rank: 1, attempt: 1, at });
    const message = { type: 'task', data: { id: taskId } } as unknown as ServerMessage;
    await bus.publish('cluster.push', { client_id: 'cw3', task_id: taskId, attempt: 1, message });
    // The rank replaces the provisional lease and its task frame goes out (it used to be
    // dropped: the client then waited CONNECTION_TIMEOUT for the stranded-lease sweep).
    await waitFor('the task frame', () => got.length === 1, 10_000, { everyMs: 10 });
    expect(got[0]).toBe(message);
    const lease = a.registry.get('cw3')!.leases.get(taskId);
    expect(lease).toMatchObject({ assignmentId: id, rank: 1, attempt: 1 });
  });
});
