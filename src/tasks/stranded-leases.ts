import { leaseFromRow } from '../clients/recovery.js';
import type { ClientRegistry, Lease } from '../clients/registry.js';
import { listQuietLiveAssignments } from '../storage/assignment-repo.js';
import type { Executor } from '../storage/executor.js';
import { toDbTime, type Clock } from '../storage/values.js';

export interface StrandedSweepDeps {
  db: Executor;
  registry: ClientRegistry;
  clock: Clock;
  /** CONNECTION_TIMEOUT, seconds. */
  connectionTimeout: number;
  /** This instance when several share the database (REDIS_URL); null alone. */
  instanceId: string | null;
  /** Ends a lease no registry here holds (LeaseService.releaseDetached). */
  release(lease: Lease, reason: string): Promise<void>;
}

/** How often the sweep runs for a CONNECTION_TIMEOUT (seconds), ms: a quarter of it, 250 ms to 10 s. */
export function strandedSweepMs(connectionTimeout: number): number {
  return Math.max(250, Math.min(10_000, (connectionTimeout * 1000) / 4));
}

/**
 * The safety net under every lease: a live assignment that no registry holds can never be
 * finished by its client (it was never told, or it is gone), so nothing else would ever end
 * it. Once such a lease has been quiet for CONNECTION_TIMEOUT and its client has been
 * connected to no instance for as long (or is connected here without knowing the task), it
 * ends as lost and the task moves on. A lease held by this instance's registry (a connected
 * client, or one in its grace period) is left to the registry's own timeout; a client whose
 * socket another live instance holds is left to that instance's sweep. Returns how many ended.
 */
export async function sweepStrandedLeases(d: StrandedSweepDeps): Promise<number> {
  const now = d.clock.now().getTime();
  const cutoff = toDbTime(new Date(now - d.connectionTimeout * 1000));
  const rows = await listQuietLiveAssignments(d.db, cutoff);
  let ended = 0;
  for (const a of rows) {
    const local = d.registry.get(a.client_id);
    if (local?.leases.get(a.task_id)?.assignmentId === Number(a.id)) continue;
    let why: string;
    if (local?.send) {
      why = `is connected but was never given attempt ${a.attempt} of task ${a.task_id}`;
    } else if (d.instanceId && Number(a.client_connected) === 1 && a.client_instance !== d.instanceId) {
      continue; // another instance holds its socket and sweeps its leases
    } else if (a.client_silent === 0) {
      continue; // gone for less than CONNECTION_TIMEOUT: it may still come back
    } else {
      why = `has been connected to no instance for over ${d.connectionTimeout} s`;
    }
    await d.release(leaseFromRow(a), `client ${a.client_id} ${why} (stranded lease ended)`);
    ended++;
  }
  return ended;
}
