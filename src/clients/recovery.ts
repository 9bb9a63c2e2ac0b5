import type { Kysely } from 'kysely';
import type { SystemInfo } from '../api/protocol.js';
import { listLiveAssignments } from '../storage/assignment-repo.js';
import type { Database } from '../storage/schema.js';
import { parseJson, toDbTime, type Clock } from '../storage/values.js';
import { capacityFromSystemInfo, type ClientRegistry, type FarmClient } from './registry.js';

/**
 * Rebuilds the working set after a start: the hardware of every known client, and the
 * leases that were live when the server stopped. Their clients get CONNECTION_TIMEOUT to
 * come back and carry on; after that the sweeper releases the leases for reassignment.
 * Returns the number of leases restored.
 */
export async function recoverRegistry(
  db: Kysely<Database>,
  registry: ClientRegistry,
  clock: Clock,
  maxTasks: number,
): Promise<number> {
  const now = clock.now();
  // No socket survives a restart: nobody is connected until they reconnect.
  await db
    .updateTable('clients')
    .set({ connected: 0, status: 'inactive', last_seen: toDbTime(now) })
    .where('connected', '=', 1)
    .execute();
  const rows = await db.selectFrom('clients').selectAll().execute();
  const hardware = new Map<string, FarmClient['hardware']>();
  const cordoned = new Map<string, boolean>();
  for (const r of rows) {
    const info = {
      cpu: parseJson(r.cpu_info),
      ram: parseJson(r.ram_info),
      gpu: parseJson(r.gpu_info),
    } as SystemInfo;
    try {
      const h = capacityFromSystemInfo(info);
      hardware.set(r.id, h);
      registry.remember(r.id, h);
    } catch {
      // A row with unreadable hardware still exists; it just cannot inform scheduling.
    }
    cordoned.set(r.id, Number(r.cordoned) === 1);
  }
  const live = await listLiveAssignments(db);
  for (const a of live) {
    let client = registry.get(a.client_id);
    if (!client) {
      client = {
        id: a.client_id,
        tokenId: null,
        hardware: hardware.get(a.client_id) ?? { cpuCores: 1, ramGb: 0, gpuMemoryGb: [] },
        maxTasks,
        cordoned: cordoned.get(a.client_id) ?? false,
        send: null,
        owner: null,
        lastSeen: now.getTime(),
        leases: new Map(),
        utilization: null,
      };
      registry.add(client);
    }
    client.leases.set(a.task_id, {
      taskId: a.task_id,
      rank: a.rank,
      attempt: a.attempt,
      assignmentId: a.id,
      clientId: a.client_id,
      status: a.status === 'paused' ? 'paused' : a.status === 'training' ? 'training' : 'assigned',
      progress: Number(a.progress),
      metrics: null,
      round: null,
      lastWrite: 0,
      lastSample: 0,
      dirty: false,
    });
  }
  return live.length;
}
