import type { Kysely, Selectable } from 'kysely';
import type { Database, UsersTable } from './schema.js';
import { updatedAny } from './values.js';

export type UserRow = Selectable<UsersTable>;

export async function insertUser(
  db: Kysely<Database>,
  u: { username: string; password_hash: string; role: 'admin'; at: string },
): Promise<number> {
  const res = await db
    .insertInto('users')
    .values({
      username: u.username,
      password_hash: u.password_hash,
      role: u.role,
      created_at: u.at,
      updated_at: u.at,
    })
    .executeTakeFirstOrThrow();
  return Number(res.insertId);
}

export async function findUserByName(db: Kysely<Database>, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
}

export async function findUser(db: Kysely<Database>, id: number): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listUsers(db: Kysely<Database>): Promise<UserRow[]> {
  return db.selectFrom('users').selectAll().orderBy('id', 'asc').execute();
}

export async function countUsers(db: Kysely<Database>): Promise<number> {
  const r = await db
    .selectFrom('users')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function setPassword(
  db: Kysely<Database>,
  id: number,
  passwordHash: string,
  at: string,
): Promise<boolean> {
  return updatedAny(
    db.updateTable('users').set({ password_hash: passwordHash, updated_at: at }).where('id', '=', id),
  );
}

export async function deleteUser(db: Kysely<Database>, id: number): Promise<boolean> {
  const res = await db.deleteFrom('users').where('id', '=', id).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}
