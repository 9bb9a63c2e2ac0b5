import { describe, expect, it } from 'vitest';
import { connectedClientRow, DIALECTS, migratedPerDescribe, taskRow } from '../../test/helpers/db.js';
import { waitFor } from '../../test/helpers/wait.js';
import { InProcessBus } from '../bus/bus.js';
import { ClientRegistry } from '../clients/registry.js';
import { silentLogger } from '../observability/logger.js';
import { createMetrics } from '../observability/metrics.js';
import { insertAssignment, listAssignments } from '../storage/assignment-repo.js';
import { updateClient, upsertClient } from '../storage/client-repo.js';
import { insertTask, updateTaskIf } from '../storage/task-repo.js';
import { WriteQueue } from '../storage/write-queue.js';
import type { FarmView, RemoteClient } from './across.js';
import { Dispatcher } from './dispatcher.js';

// A lost rank of a running task placed on a client of another instance (issue 14, point 4):
// when its claim fails, the rank stays queued and is placed by a later pass.
describe.each(DIALECTS)('re-placing a lost rank across instances on %s', (dialect) => {
  const h = migratedPerDescribe(dialect);
  const AT = '2030-01-02 03:00:00';

  const client = (id: string, instanceId: string) =>
    upsertClient(h.db, connectedClientRow(id, instanceId, AT));

  it('keeps a rank whose remote claim failed queued, and places it once the client qualifies', async () => {
    const taskId = await insertTask(
      h.db,
      taskRow({ type: 'command', world_size: 2, created_by: null, now: AT }),
    );
    await updateTaskIf(h.db, taskId, ['pending'], { status: 'running', attempts: 1 });
    // Rank 1 runs on a client of instance B; rank 0 was lost and waits for a client.
    await client('holder', 'inst-b');
    await insertAssignment(h.db, { task_id: taskId, client_id: 'holder', rank: 1, attempt: 1, at: AT });
    // The spare: instance B holds it as far as the farm view read, but the database says it
    // moved to instance C since (its claim takes a slot only through the instance it names).
    await client('spare', 'inst-c');
    const spare: RemoteClient = {
      id: 'spare',
      cpuCores: 4,
      ramGb: 16,
      gpuMemoryGb: [],
      instanceId: 'inst-b',
      maxTasks: 1,
      freeSlots: 1,
      cordoned: false,
    };
    const farm: FarmView = {
      remoteClients: async () => [spare],
      clientsOf: async () => ['holder'],
    };
    const bus = new InProcessBus();
    const pushed: { client_id: string; attempt: number }[] = [];
    bus.subscribe('cluster.push', (m) => void pushed.push(m));
    const logger = silentLogger();
    const registry = new ClientRegistry();
    const writes = new WriteQueue(h.db, logger);
    const dispatcher = new Dispatcher({
      db: h.db,
      writes,
      registry,
      bus,
      clock: { now: () => new Date() },
      logger,
      metrics: createMetrics({ tasksByStatus: async () => ({}), connected: () => 0 }),
      maxTasksPerClient: 1,
      farm,
    });
    try {
      await dispatcher.requeueRanks(taskId, [0]);
      await dispatcher.passNow();
      // The claim failed (the slot is not B's to give): nothing assigned, nothing sent.
      expect((await listAssignments(h.db, taskId)).map((a) => a.rank)).toEqual([1]);
      expect(pushed).toEqual([]);
      // Back on B: a later pass (a moment later, without any other event) places the rank there.
      // (It used to be dropped from the queue by the failed claim, and never placed again.)
      await updateClient(h.db, 'spare', { instance_id: 'inst-b' });
      await waitFor('rank 0 placed on the spare', () => pushed.length > 0, 10_000, { everyMs: 20 });
      expect(pushed).toMatchObject([{ client_id: 'spare', attempt: 1 }]);
      const rows = await listAssignments(h.db, taskId);
      expect(rows.map((a) => [a.rank, a.client_id, a.status])).toEqual([
        [0, 'spare', 'assigned'],
        [1, 'holder', 'assigned'],
      ]);
      expect(dispatcher.has(taskId)).toBe(false);
    } finally {
      dispatcher.close();
    }
  });
});
