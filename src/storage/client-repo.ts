import type { Insertable, Kysely, Selectable, Updateable } from 'kysely';
import type { ClientsTable, Database } from './schema.js';

export type ClientRow = Selectable<ClientsTable>;

export interface ClientFilter {
  status?: 'active' | 'inactive' | undefined;
  connected?: boolean | undefined;
  limit: number;
  offset: number;
}

export async function findClient(db: Kysely<Database>, id: string): Promise<ClientRow | undefined> {
  return db.selectFrom('clients').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listClients(
  db: Kysely<Database>,
  f: ClientFilter,
): Promise<{ rows: ClientRow[]; total: number }> {
  let q = db.selectFrom('clients');
  if (f.status) q = q.where('status', '=', f.status);
  if (f.connected !== undefined) q = q.where('connected', '=', f.connected ? 1 : 0);
  const [rows, count] = await Promise.all([
    q.selectAll().orderBy('id', 'asc').limit(f.limit).offset(f.offset).execute(),
    q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.n) };
}

/** Inserts or replaces what a client reports about itself at registration. */
export async function upsertClient(
  db: Kysely<Database>,
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

export async function updateClient(
  db: Kysely<Database>,
  id: string,
  changes: Updateable<ClientsTable>,
): Promise<boolean> {
  const res = await db.updateTable('clients').set(changes).where('id', '=', id).executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}
