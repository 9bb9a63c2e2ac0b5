import type { SystemInfo } from '../api/protocol.js';
import { listLiveAssignments, type AssignmentRow } from '../storage/assignment-repo.js';
import { findClient, listAllClients, markAllDisconnected, type ClientRow } from '../storage/client-repo.js';
import type { Executor } from '../storage/executor.js';
import { parseJson, toDbTime, type Clock } from '../storage/values.js';
import { capacityFromSystemInfo, type ClientRegistry, type FarmClient, type Lease } from './registry.js';

/**
 * Rebuilds the working set after a start: the hardware of every known client, and the
 * leases that were live when the server stopped. Their clients get CONNECTION_TIMEOUT to
 * come back and carry on; after that the sweeper releases the leases for reassignment.
 * Returns the number of leases restored.
 *
 * This is the lone instance's recovery: it takes over every client and live lease. With
 * several instances (src/cluster) an instance takes over only those of dead instances.
 */
export async function recoverRegistry(
  db: Executor,
  registry: ClientRegistry,
  clock: Clock,
  maxTasks: number,
): Promise<number> {
  const now = clock.now();
  // No socket survives a restart: nobody is connected until they reconnect.
  await markAllDisconnected(db, toDbTime(now));
  const rows = await rememberHardware(db, registry);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const live = await listLiveAssignments(db);
  for (const a of live) holdLease(registry, a, byId.get(a.client_id), now.getTime(), maxTasks);
  return live.length;
}

/** Reads every client's hardware into the registry (for "no known client can run this"). */
export async function rememberHardware(db: Executor, registry: ClientRegistry): Promise<ClientRow[]> {
  const rows = await listAllClients(db);
  for (const r of rows) {
    const h = hardwareOf(r);
    if (h) registry.remember(r.id, h);
  }
  return rows;
}

/** A client's hardware (and the task types it declared) from its row; null when unreadable. */
export function hardwareOf(r: ClientRow): FarmClient['hardware'] | null {
  const info = {
    cpu: parseJson(r.cpu_info),
    ram: parseJson(r.ram_info),
    gpu: parseJson(r.gpu_info),
  } as SystemInfo;
  try {
    const types = sessionOf(r).task_types;
    const hardware = capacityFromSystemInfo(info);
    return Array.isArray(types) ? { ...hardware, taskTypes: types as string[] } : hardware;
  } catch {
    // A row with unreadable hardware still exists; it just cannot inform scheduling.
    return null;
  }
}

/** What a client's row keeps of its registration besides hardware (registration.ts writes it). */
export function sessionOf(r: ClientRow): { task_types?: unknown; max_tasks?: unknown } {
  const s = parseJson(r.session_info);
  return s !== null && typeof s === 'object' ? (s as Record<string, unknown>) : {};
}

/** Reads one client's hardware into the registry (a client registered through another instance). */
export async function rememberClient(db: Executor, registry: ClientRegistry, id: string): Promise<void> {
  const row = await findClient(db, id);
  const h = row && hardwareOf(row);
  if (h) registry.remember(id, h);
}

/**
 * Puts a live assignment into the registry as a lease of its client; a client not connected
 * here is added without a socket (it may reconnect; the sweeper releases it otherwise).
 * Returns the lease, or null when the client already holds one on that task.
 */
export function holdLease(
  registry: ClientRegistry,
  a: AssignmentRow,
  row: ClientRow | undefined,
  lastSeen: number,
  maxTasks: number,
): Lease | null {
  let client = registry.get(a.client_id);
  if (!client) {
    client = {
      id: a.client_id,
      tokenId: row?.token_id ?? null,
      hardware: (row && hardwareOf(row)) ?? { cpuCores: 1, ramGb: 0, gpuMemoryGb: [] },
      maxTasks,
      cordoned: Number(row?.cordoned ?? 0) === 1,
      send: null,
      owner: null,
      lastSeen,
      leases: new Map(),
      utilization: null,
    };
    registry.add(client);
  }
  if (client.leases.has(a.task_id)) return null;
  const lease = leaseFromRow(a);
  client.leases.set(a.task_id, lease);
  return lease;
}

/** The in-memory lease of a live assignment row. */
export function leaseFromRow(a: AssignmentRow): Lease {
  return {
    taskId: a.task_id,
    rank: Number(a.rank),
    attempt: Number(a.attempt),
    assignmentId: Number(a.id),
    clientId: a.client_id,
    status: a.status === 'paused' ? 'paused' : a.status === 'training' ? 'training' : 'assigned',
    progress: Number(a.progress),
    metrics: null,
    round: null,
    lastWrite: 0,
    lastSample: 0,
    dirty: false,
  };
}
