import type { Kysely, Selectable } from 'kysely';
import type { Database, SessionsTable } from './schema.js';

export type SessionRow = Selectable<SessionsTable>;

/** A session joined with the user it belongs to. */
export interface SessionWithUser extends SessionRow {
  username: string;
  role: 'admin';
}

export async function insertSession(db: Kysely<Database>, s: SessionRow): Promise<void> {
  await db.insertInto('sessions').values(s).execute();
}

export async function findSession(db: Kysely<Database>, id: string): Promise<SessionWithUser | undefined> {
  return db
    .selectFrom('sessions')
    .innerJoin('users', 'users.id', 'sessions.user_id')
    .selectAll('sessions')
    .select(['users.username', 'users.role'])
    .where('sessions.id', '=', id)
    .executeTakeFirst();
}

export async function touchSession(
  db: Kysely<Database>,
  id: string,
  lastSeenAt: string,
  expiresAt: string,
): Promise<void> {
  await db
    .updateTable('sessions')
    .set({ last_seen_at: lastSeenAt, expires_at: expiresAt })
    .where('id', '=', id)
    .execute();
}

export async function deleteSession(db: Kysely<Database>, id: string): Promise<void> {
  await db.deleteFrom('sessions').where('id', '=', id).execute();
}

/** Ends every session of a user except, optionally, one (the caller's own). */
export async function deleteUserSessions(
  db: Kysely<Database>,
  userId: number,
  exceptId?: string,
): Promise<number> {
  let q = db.deleteFrom('sessions').where('user_id', '=', userId);
  if (exceptId) q = q.where('id', '!=', exceptId);
  const res = await q.executeTakeFirst();
  return Number(res.numDeletedRows);
}

export async function deleteExpiredSessions(db: Kysely<Database>, now: string): Promise<number> {
  const res = await db.deleteFrom('sessions').where('expires_at', '<', now).executeTakeFirst();
  return Number(res.numDeletedRows);
}

// ---- failed logins -------------------------------------------------------------

export async function insertLoginFailure(
  db: Kysely<Database>,
  f: { at: string; ip: string; username: string },
): Promise<void> {
  await db.insertInto('login_failures').values(f).execute();
}

/** Times of the failures since `since` for this address or this username, oldest first. */
export async function recentLoginFailures(
  db: Kysely<Database>,
  by: 'ip' | 'username',
  value: string,
  since: string,
): Promise<string[]> {
  const rows = await db
    .selectFrom('login_failures')
    .select('at')
    .where(by, '=', value)
    .where('at', '>=', since)
    .orderBy('at', 'asc')
    .execute();
  return rows.map((r) => String(r.at));
}

/** A correct password clears the failures counted against this username from this address. */
export async function clearLoginFailures(db: Kysely<Database>, ip: string, username: string): Promise<void> {
  await db.deleteFrom('login_failures').where('ip', '=', ip).where('username', '=', username).execute();
}

export async function deleteOldLoginFailures(db: Kysely<Database>, before: string): Promise<void> {
  await db.deleteFrom('login_failures').where('at', '<', before).execute();
}
