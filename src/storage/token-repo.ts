import type { Kysely, Selectable } from 'kysely';
import type { ApiTokensTable, Database, Role } from './schema.js';
import { updatedAny } from './values.js';

export type TokenRow = Selectable<ApiTokensTable>;

export async function insertToken(
  db: Kysely<Database>,
  t: {
    id: string;
    name: string;
    role: Role;
    token_hash: string;
    created_at: string;
    created_by: string | null;
  },
): Promise<void> {
  await db.insertInto('api_tokens').values(t).execute();
}

export async function findTokenByHash(db: Kysely<Database>, hash: string): Promise<TokenRow | undefined> {
  return db.selectFrom('api_tokens').selectAll().where('token_hash', '=', hash).executeTakeFirst();
}

export async function findToken(db: Kysely<Database>, id: string): Promise<TokenRow | undefined> {
  return db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listTokens(db: Kysely<Database>, includeRevoked: boolean): Promise<TokenRow[]> {
  let q = db.selectFrom('api_tokens').selectAll();
  if (!includeRevoked) q = q.where('revoked_at', 'is', null);
  return q.orderBy('created_at', 'asc').execute();
}

export async function revokeToken(db: Kysely<Database>, id: string, at: string): Promise<boolean> {
  return updatedAny(
    db.updateTable('api_tokens').set({ revoked_at: at }).where('id', '=', id).where('revoked_at', 'is', null),
  );
}

/** Which of `ids` name tokens that exist and are not revoked. */
export async function activeTokenIds(db: Kysely<Database>, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .selectFrom('api_tokens')
    .select('id')
    .where('id', 'in', ids)
    .where('revoked_at', 'is', null)
    .execute();
  return new Set(rows.map((r) => r.id));
}

export async function touchToken(db: Kysely<Database>, id: string, at: string): Promise<void> {
  await db.updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', id).execute();
}

export async function countActiveAdminTokens(db: Kysely<Database>): Promise<number> {
  const r = await db
    .selectFrom('api_tokens')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('role', '=', 'admin')
    .where('revoked_at', 'is', null)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function insertAudit(
  db: Kysely<Database>,
  a: { at: string; actor: string; action: string; target: string; detail?: unknown },
): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({ ...a, detail: a.detail === undefined ? null : JSON.stringify(a.detail) })
    .execute();
}
