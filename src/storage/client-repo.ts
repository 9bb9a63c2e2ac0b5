import { sql, type Insertable, type Selectable, type Updateable } from 'kysely';
import type { Executor } from './executor.js';
import type { ClientsTable } from './schema.js';
import { pageOf } from './page.js';
import { updatedAny } from './values.js';

export type ClientRow = Selectable<ClientsTable>;

export interface ClientFilter {
  status?: 'active' | 'inactive' | undefined;
  connected?: boolean | undefined;
  limit: number;
  offset: number;
}

export async function findClient(db: Executor, id: string): Promise<ClientRow | undefined> {
  return db.selectFrom('clients').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listClients(
  db: Executor,
  f: ClientFilter,
): Promise<{ rows: ClientRow[]; total: number }> {
  let q = db.selectFrom('clients');
  if (f.status) q = q.where('status', '=', f.status);
  if (f.connected !== undefined) q = q.where('connected', '=', f.connected ? 1 : 0);
  return pageOf(q, (page) => page.selectAll().orderBy('id', 'asc'), f);
}

/** Inserts or replaces what a client reports about itself at registration. */
export async function upsertClient(
  db: Executor,
  row: Insertable<ClientsTable> & { id: string },
): Promise<void> {
  const existing = await findClient(db, row.id);
  if (existing) {
    const { id: _id, registered_at: _r, cordoned: _c, ...changes } = row;
    await db.updateTable('clients').set(changes).where('id', '=', row.id).execute();
  } else {
    await db.insertInto('clients').values(row).execute();
  }
}

export async function listAllClients(db: Executor): Promise<ClientRow[]> {
  return db.selectFrom('clients').selectAll().execute();
}

/** After a restart no socket survives: every client still marked connected is not. */
export async function markAllDisconnected(db: Executor, at: string): Promise<void> {
  await db
    .updateTable('clients')
    .set({ connected: 0, status: 'inactive', last_seen: at })
    .where('connected', '=', 1)
    .execute();
}

export async function updateClient(
  db: Executor,
  id: string,
  changes: Updateable<ClientsTable>,
): Promise<boolean> {
  return updatedAny(db.updateTable('clients').set(changes).where('id', '=', id));
}

/** What a client was last heard saying: its row's last_seen and utilization. */
export interface ClientTouch {
  id: string;
  last_seen: string;
  /** JSON, or null to leave the stored utilization as it is. */
  utilization: string | null;
}

/** Most clients per statement of `touchClients`. */
const TOUCH_CHUNK = 256;

/**
 * Writes last_seen and utilization of many connected clients with one `UPDATE` per
 * TOUCH_CHUNK of them (a row no longer connected is left alone: its disconnect wrote it).
 * Chunks are padded to a power of two by repeating their last client, so a handful of
 * statement shapes serve every count.
 */
export async function touchClients(db: Executor, touches: readonly ClientTouch[]): Promise<void> {
  for (let i = 0; i < touches.length; i += TOUCH_CHUNK) {
    const chunk = touches.slice(i, i + TOUCH_CHUNK);
    const last = chunk[chunk.length - 1] as ClientTouch;
    let size = 1;
    while (size < chunk.length) size *= 2;
    while (chunk.length < size) chunk.push(last);
    const seen = sql.join(
      chunk.map((t) => sql`when ${t.id} then ${t.last_seen}`),
      sql` `,
    );
    const util = sql.join(
      chunk.map((t) => sql`when ${t.id} then ${t.utilization}`),
      sql` `,
    );
    await db
      .updateTable('clients')
      .set({
        last_seen: sql<string>`case id ${seen} end`,
        utilization: sql<string | null>`coalesce(case id ${util} end, utilization)`,
      })
      .where(
        'id',
        'in',
        chunk.map((t) => t.id),
      )
      .where('connected', '=', 1)
      .execute();
  }
}
