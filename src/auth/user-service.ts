import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AppError, conflict, notFound } from '../errors.js';
import type { Database } from '../storage/schema.js';
import { deleteUserSessions } from '../storage/session-repo.js';
import { insertAudit } from '../storage/token-repo.js';
import * as repo from '../storage/user-repo.js';
import { fromDbTime, toDbTime, type Clock } from '../storage/values.js';
import {
  DEFAULT_SCRYPT,
  generatePassword,
  hashPassword,
  verifyPassword,
  type ScryptParams,
} from './password.js';
import type { Principal } from './principal.js';

/** An admin-panel user as shown to admins: never the password hash. */
export interface UserView {
  id: number;
  username: string;
  role: 'admin';
  created_at: string;
  updated_at: string;
}

/** Usernames are case-insensitive (MySQL's collation would make them so anyway): stored lower-case. */
export const normalizeUsername = (u: string): string => u.trim().toLowerCase();

export const USERNAME_PATTERN = '^[A-Za-z0-9_.@-]{1,64}$';
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

/** Admin-panel users: first-start bootstrap, login checks, administration. */
export class UserService {
  private decoy: Promise<string> | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly scrypt: ScryptParams = DEFAULT_SCRYPT,
  ) {}

  /**
   * Makes sure someone can log in to the panel: with no user at all, creates `username`
   * with `password`, or with a generated password returned for the caller to print once.
   * Existing users are left alone (ADMIN_PASSWORD is a first-start setting).
   */
  async bootstrap(username: string, password: string): Promise<{ createdPassword?: string }> {
    if ((await repo.countUsers(this.db)) > 0) return {};
    const generated = password ? undefined : generatePassword();
    try {
      await this.create(username, password || (generated as string), 'first start', { checkLength: false });
    } catch (err) {
      // Another instance started at the same moment and created the user first.
      if ((await repo.countUsers(this.db)) > 0) return {};
      throw err;
    }
    return generated ? { createdPassword: generated } : {};
  }

  async list(): Promise<UserView[]> {
    return (await repo.listUsers(this.db)).map(present);
  }

  async create(
    username: string,
    password: string,
    actor: string,
    opts: { checkLength?: boolean } = {},
  ): Promise<UserView> {
    const name = normalizeUsername(username);
    if (!new RegExp(USERNAME_PATTERN).test(name))
      throw new AppError('invalid_username', `username must match ${USERNAME_PATTERN}`, 400, {
        fields: ['body/username'],
      });
    if (opts.checkLength !== false) checkPassword(password);
    if (await repo.findUserByName(this.db, name))
      throw conflict('user_exists', `user ${name} already exists`);
    const at = toDbTime(this.clock.now(), true);
    const id = await repo.insertUser(this.db, {
      username: name,
      password_hash: await hashPassword(password, this.scrypt),
      role: 'admin',
      at,
    });
    await insertAudit(this.db, { at, actor, action: 'user.create', target: name });
    return present(await this.mustFind(id));
  }

  /**
   * Sets a user's password and ends that user's other sessions. Changing one's own password
   * from a session needs the current one, so a borrowed unlocked browser cannot lock the owner out.
   */
  async changePassword(
    id: number,
    password: string,
    by: Principal | { kind: 'cli'; name: string },
    opts: { currentPassword?: string | undefined; keepSessionId?: string | undefined } = {},
  ): Promise<UserView> {
    checkPassword(password);
    const row = await this.mustFind(id);
    if (by.kind === 'session' && by.id === String(id)) {
      if (!opts.currentPassword || !(await verifyPassword(opts.currentPassword, row.password_hash)))
        throw new AppError('wrong_password', 'the current password is not right', 400, {
          fields: ['body/current_password'],
        });
    }
    const at = toDbTime(this.clock.now(), true);
    await repo.setPassword(this.db, id, await hashPassword(password, this.scrypt), at);
    await deleteUserSessions(this.db, id, opts.keepSessionId);
    await insertAudit(this.db, { at, actor: by.name, action: 'user.passwd', target: row.username });
    return present(await this.mustFind(id));
  }

  async delete(id: number, by: Principal): Promise<void> {
    const row = await this.mustFind(id);
    if (by.kind === 'session' && by.id === String(id))
      throw conflict('cannot_delete_self', 'you cannot delete the user you are logged in as');
    if ((await repo.countUsers(this.db)) <= 1)
      throw conflict('last_user', 'the last user cannot be deleted: nobody could log in');
    await repo.deleteUser(this.db, id);
    await insertAudit(this.db, {
      at: toDbTime(this.clock.now(), true),
      actor: by.name,
      action: 'user.delete',
      target: row.username,
    });
  }

  async findByName(username: string): Promise<UserView | undefined> {
    const row = await repo.findUserByName(this.db, normalizeUsername(username));
    return row ? present(row) : undefined;
  }

  /** The user when the password is right, else null; unknown names cost as much as wrong passwords. */
  async verifyLogin(username: string, password: string): Promise<UserView | null> {
    const row = await repo.findUserByName(this.db, normalizeUsername(username));
    if (!row || password.length > MAX_PASSWORD_LENGTH) {
      this.decoy ??= hashPassword(randomBytes(16).toString('hex'), this.scrypt);
      await verifyPassword(password.slice(0, MAX_PASSWORD_LENGTH), await this.decoy);
      return null;
    }
    return (await verifyPassword(password, row.password_hash)) ? present(row) : null;
  }

  private async mustFind(id: number): Promise<repo.UserRow> {
    const row = await repo.findUser(this.db, id);
    if (!row) throw notFound('user', id);
    return row;
  }
}

function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH || password.length > MAX_PASSWORD_LENGTH)
    throw new AppError(
      'weak_password',
      `password must be ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters long`,
      400,
      { fields: ['body/password'] },
    );
}

function present(r: repo.UserRow): UserView {
  return {
    id: Number(r.id),
    username: r.username,
    role: r.role,
    created_at: fromDbTime(r.created_at) as string,
    updated_at: fromDbTime(r.updated_at) as string,
  };
}
