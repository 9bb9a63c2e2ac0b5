import type { Kysely, Selectable } from 'kysely';
import type { ClientsTable, Database } from './schema.js';

/** Tasks counted by status, e.g. { pending: 3, running: 1 }. */
export async function countTasksByStatus(db: Kysely<Database>): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom('tasks')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('status')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

export async function countClients(
  db: Kysely<Database>,
): Promise<{ total: number; connected: number; cordoned: number }> {
  const r = await db
    .selectFrom('clients')
    .select((eb) => [
      eb.fn.countAll<number>().as('total'),
      eb.fn.sum<number>('connected').as('connected'),
      eb.fn.sum<number>('cordoned').as('cordoned'),
    ])
    .executeTakeFirstOrThrow();
  return { total: Number(r.total), connected: Number(r.connected ?? 0), cordoned: Number(r.cordoned ?? 0) };
}

export type ClientLoadRow = Pick<
  Selectable<ClientsTable>,
  'id' | 'cpu_info' | 'ram_info' | 'gpu_info' | 'utilization'
>;

/** What connected clients last reported about their load (MAX_CLIENTS bounds the count). */
export async function connectedClientLoads(db: Kysely<Database>, limit = 10_000): Promise<ClientLoadRow[]> {
  return db
    .selectFrom('clients')
    .select(['id', 'cpu_info', 'ram_info', 'gpu_info', 'utilization'])
    .where('connected', '=', 1)
    .orderBy('id')
    .limit(limit)
    .execute();
}
