/**
 * Queries of the instance registry (migration 006). An instance is live while its heartbeat is
 * newer than the cutoff; a client row or training owner naming any other instance (or, for a
 * client with live leases, none) is an orphan that a live instance may take over, each with one
 * conditional UPDATE so that two instances never both win.
 */
import type { Executor } from '../storage/executor.js';
import { LIVE_ASSIGNMENT, type AssignmentRow } from '../storage/assignment-repo.js';
import type { ClientRow } from '../storage/client-repo.js';
import type { AssignmentStatus } from '../storage/schema.js';
import { updatedAny } from '../storage/values.js';

type Db = Executor;
const LIVE = LIVE_ASSIGNMENT as AssignmentStatus[];

export async function registerInstance(
  db: Db,
  r: { id: string; host: string; pid: number; at: string },
): Promise<void> {
  await db
    .insertInto('server_instances')
    .values({ id: r.id, host: r.host, pid: r.pid, started_at: r.at, heartbeat_at: r.at })
    .execute();
}

/** Renews this instance's heartbeat; false when its row is gone (the others declared it dead). */
export async function heartbeat(db: Db, id: string, at: string): Promise<boolean> {
  return updatedAny(db.updateTable('server_instances').set({ heartbeat_at: at }).where('id', '=', id));
}

export async function removeInstance(db: Db, id: string): Promise<void> {
  await db.deleteFrom('server_instances').where('id', '=', id).execute();
}

/** Ids of the instances whose heartbeat is at or after `cutoff`. */
export async function liveInstances(db: Db, cutoff: string): Promise<string[]> {
  const rows = await db
    .selectFrom('server_instances')
    .select('id')
    .where('heartbeat_at', '>=', cutoff)
    .execute();
  return rows.map((r) => r.id);
}

/** Forgets instances dead since before `cutoff` (their clients and trainings are orphans by then). */
export async function removeDead(db: Db, cutoff: string): Promise<void> {
  await db.deleteFrom('server_instances').where('heartbeat_at', '<', cutoff).execute();
}

/** Clients shown connected through an instance that is no longer live: they are not. */
export async function disconnectOrphans(db: Db, live: string[], at: string): Promise<void> {
  await db
    .updateTable('clients')
    .set({ connected: 0, status: 'inactive', last_seen: at })
    .where('connected', '=', 1)
    .where('instance_id', 'is not', null)
    .where('instance_id', 'not in', live)
    .execute();
}

/** A client with live leases held by an instance that is not live (or by none). */
export interface OrphanClient {
  clientId: string;
  /** The instance that held it when read: the take-over succeeds only if it still does. */
  heldBy: string | null;
}

/** Clients with live leases whose instance is not live (or unknown). */
export async function orphanClients(db: Db, live: string[]): Promise<OrphanClient[]> {
  const rows = await db
    .selectFrom('task_assignments as a')
    .innerJoin('clients as c', 'c.id', 'a.client_id')
    .select(['a.client_id', 'c.instance_id'])
    .distinct()
    .where('a.status', 'in', LIVE)
    .where((eb) => eb.or([eb('c.instance_id', 'is', null), eb('c.instance_id', 'not in', live)]))
    .execute();
  return rows.map((r) => ({ clientId: r.client_id, heldBy: r.instance_id }));
}

/**
 * Takes an orphan client over for `me`: one compare-and-set on the holder read with it, so of
 * the instances that saw it orphaned exactly one wins, whatever each believed about which
 * instances are live. False when another instance got it first (or it reconnected).
 */
export async function claimClient(db: Db, orphan: OrphanClient, me: string): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('clients')
      .set({ instance_id: me, connected: 0, status: 'inactive' })
      .where('id', '=', orphan.clientId)
      .where((eb) =>
        orphan.heldBy === null ? eb('instance_id', 'is', null) : eb('instance_id', '=', orphan.heldBy),
      ),
  );
}

/** Records that `me` holds the client's socket now; returns the instance that held it before. */
export async function holdClient(db: Db, clientId: string, me: string): Promise<string | null> {
  const row = await db
    .selectFrom('clients')
    .select('instance_id')
    .where('id', '=', clientId)
    .executeTakeFirst();
  await db.updateTable('clients').set({ instance_id: me }).where('id', '=', clientId).execute();
  return row?.instance_id ?? null;
}

/** A connected client whose socket another instance holds, with its live assignments. */
export interface RemoteClientRow {
  row: ClientRow;
  busy: number;
}

/** Clients connected through the `others` instances, each with its number of live assignments. */
export async function remoteClients(db: Db, others: string[]): Promise<RemoteClientRow[]> {
  if (others.length === 0) return [];
  const rows = await db
    .selectFrom('clients')
    .selectAll()
    .where('connected', '=', 1)
    .where('instance_id', 'in', others)
    .execute();
  if (rows.length === 0) return [];
  const counts = await db
    .selectFrom('task_assignments')
    .select(['client_id', (eb) => eb.fn.countAll<number>().as('n')])
    .where('status', 'in', LIVE)
    .where(
      'client_id',
      'in',
      rows.map((r) => r.id),
    )
    .groupBy('client_id')
    .execute();
  const busy = new Map(counts.map((c) => [c.client_id, Number(c.n)]));
  return rows.map((row) => ({ row, busy: busy.get(row.id) ?? 0 }));
}

export async function liveAssignmentsOf(db: Db, clientId: string): Promise<AssignmentRow[]> {
  return db
    .selectFrom('task_assignments')
    .selectAll()
    .where('client_id', '=', clientId)
    .where('status', 'in', LIVE)
    .execute();
}

/** A client's live lease on a task with what the upload check needs, wherever it is connected. */
export async function leaseOf(
  db: Db,
  clientId: string,
  taskId: number,
): Promise<{ rank: number; attempt: number; token_id: string | null; connected: number } | undefined> {
  return db
    .selectFrom('task_assignments as a')
    .innerJoin('clients as c', 'c.id', 'a.client_id')
    .select(['a.rank', 'a.attempt', 'c.token_id', 'c.connected'])
    .where('a.client_id', '=', clientId)
    .where('a.task_id', '=', taskId)
    .where('a.status', 'in', LIVE)
    .executeTakeFirst();
}

export async function ownerOf(db: Db, taskId: number): Promise<string | null> {
  const row = await db
    .selectFrom('training_owners')
    .select('instance_id')
    .where('task_id', '=', taskId)
    .executeTakeFirst();
  return row?.instance_id ?? null;
}

/** Becomes the first owner of a task; false when it already has one (the primary key). */
export async function insertOwner(db: Db, taskId: number, me: string, at: string): Promise<boolean> {
  try {
    await db
      .insertInto('training_owners')
      .values({ task_id: taskId, instance_id: me, acquired_at: at })
      .execute();
    return true;
  } catch {
    return false;
  }
}

/** Takes a task over from `from` (a dead instance); false when someone else did first. */
export async function takeOwner(
  db: Db,
  taskId: number,
  from: string,
  me: string,
  at: string,
): Promise<boolean> {
  return updatedAny(
    db
      .updateTable('training_owners')
      .set({ instance_id: me, acquired_at: at })
      .where('task_id', '=', taskId)
      .where('instance_id', '=', from),
  );
}

/** Running training tasks with an open round whose owner is not live. */
export async function orphanTrainings(db: Db, live: string[]): Promise<number[]> {
  const rows = await db
    .selectFrom('training_owners as o')
    .innerJoin('tasks as t', 't.id', 'o.task_id')
    .select('o.task_id')
    .where('t.status', 'in', ['running', 'paused'])
    .where('o.instance_id', 'not in', live)
    .execute();
  return rows.map((r) => Number(r.task_id));
}
