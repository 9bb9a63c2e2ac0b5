import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Bus } from '../bus/bus.js';
import type { Cache } from '../cache/cache.js';
import { AppError, notFound } from '../errors.js';
import type { Clock } from '../storage/values.js';
import { fromDbTime, toDbTime } from '../storage/values.js';
import type { Database, Role } from '../storage/schema.js';
import * as repo from '../storage/token-repo.js';
import type { Principal } from './principal.js';

/** A token as shown to users: never its secret, never its hash. */
export interface TokenView {
  id: string;
  name: string;
  role: Role;
  created_at: string;
  created_by: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

const TOKEN_PREFIX = 'afm_';
const BOOTSTRAP_NAME = 'bootstrap-admin';

/**
 * Names no token may be given (compared without case): the server's own principals and the
 * ones people read as "the administrator". Access never follows a name (tasks belong to the
 * token's id), but the name is what task listings and the audit log show.
 */
export const RESERVED_TOKEN_NAMES: ReadonlySet<string> = new Set([
  BOOTSTRAP_NAME,
  'admin',
  'administrator',
  'root',
  'system',
  'cli',
]);
/** last_used_at is written at most this often per token, to keep requests read-only. */
const TOUCH_INTERVAL_MS = 60_000;

/**
 * How long a token lookup may be served from the cache (src/cache/token-cache.ts). Every
 * revocation invalidates at once; this bounds what could not: `ai-farm tokens revoke`
 * run while Redis did not answer it.
 */
export const TOKEN_CACHE_TTL_MS = 5_000;

/** SHA-256 suits 256-bit random tokens (no dictionary to guess from); passwords use scrypt. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * API tokens: creation, lookup by hash, revocation. Every authenticated request and
 * WebSocket upgrade looks its token up, so lookups go through a cache (keyed by the
 * token's hash, never the secret) when one is given; revocation invalidates it.
 */
export class TokenService {
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly cache?: Cache<Principal>,
    /** Told of every revocation, so each instance closes the token's open sockets. */
    private readonly bus?: Pick<Bus, 'publish'>,
  ) {}

  /** Creates a token; the secret is returned once and stored only as a hash. Reserved names are refused. */
  async create(
    name: string,
    role: Role,
    createdBy: string | null,
  ): Promise<{ token: string; view: TokenView }> {
    if (RESERVED_TOKEN_NAMES.has(name.toLowerCase())) {
      throw new AppError('reserved_name', `the token name "${name}" is reserved; choose another`, 400, {
        fields: ['body/name'],
      });
    }
    return this.insert(name, role, createdBy);
  }

  private async insert(
    name: string,
    role: Role,
    createdBy: string | null,
  ): Promise<{ token: string; view: TokenView }> {
    const token = generateToken();
    const id = 'tok_' + randomBytes(6).toString('hex');
    const row = {
      id,
      name,
      role,
      token_hash: hashToken(token),
      created_at: toDbTime(this.clock.now(), true),
      created_by: createdBy,
    };
    await repo.insertToken(this.db, row);
    await repo.insertAudit(this.db, {
      at: row.created_at,
      actor: createdBy ?? 'system',
      action: 'token.create',
      target: id,
      detail: { name, role },
    });
    return { token, view: present({ ...row, last_used_at: null, revoked_at: null }) };
  }

  /** The principal behind a bearer token, or null when it is unknown or revoked. */
  async authenticate(token: string): Promise<Principal | null> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) return null;
    const hash = hashToken(token);
    const load = () => this.lookup(hash);
    const principal = (await (this.cache ? this.cache.get(hash, load) : load())) ?? null;
    if (!principal) return null;
    const now = this.clock.now().getTime();
    if ((this.touched.get(principal.id) ?? 0) + TOUCH_INTERVAL_MS < now) {
      this.touched.set(principal.id, now);
      await repo.touchToken(this.db, principal.id, toDbTime(new Date(now), true));
    }
    return principal;
  }

  /** Reads a token by hash from the database; undefined when unknown or revoked (never cached). */
  private async lookup(hash: string): Promise<Principal | undefined> {
    const row = await repo.findTokenByHash(this.db, hash);
    if (!row || row.revoked_at !== null) return undefined;
    // The lookup was by hash; compare again in constant time for good measure.
    if (!timingSafeEqual(Buffer.from(row.token_hash), Buffer.from(hash))) return undefined;
    return { kind: 'token', id: row.id, name: row.name, role: row.role };
  }

  async list(includeRevoked = false): Promise<TokenView[]> {
    return (await repo.listTokens(this.db, includeRevoked)).map(present);
  }

  /** Which of `ids` are still valid tokens (the gateway re-checks its open sockets with it). */
  async stillActive(ids: readonly string[]): Promise<Set<string>> {
    return repo.activeTokenIds(this.db, ids);
  }

  /**
   * Revokes a token: refused from now on by every instance (cache invalidated), and its
   * open WebSockets are closed with 4001 wherever they are (the `token.revoked` bus topic).
   */
  async revoke(id: string, actor: string): Promise<TokenView> {
    const row = await repo.findToken(this.db, id);
    if (!row) throw notFound('token', id);
    if (row.revoked_at !== null) throw new AppError('token_revoked', `token ${id} is already revoked`, 409);
    const at = toDbTime(this.clock.now(), true);
    await repo.revokeToken(this.db, id, at);
    // After the commit: from here on no instance accepts it.
    await this.cache?.invalidate(row.token_hash);
    await this.bus?.publish('token.revoked', { token_id: id });
    await repo.insertAudit(this.db, { at, actor, action: 'token.revoke', target: id });
    return present({ ...row, revoked_at: at });
  }

  /**
   * Makes sure an admin can get in. With ADMIN_TOKEN, that token is the bootstrap admin
   * (replacing an older bootstrap token). Without it, the first start creates an admin
   * token and returns it so the caller can print it once.
   */
  async bootstrap(adminToken: string): Promise<{ created?: string }> {
    const at = toDbTime(this.clock.now(), true);
    if (adminToken) {
      const hash = hashToken(adminToken);
      const existing = await repo.findTokenByHash(this.db, hash);
      if (existing && existing.revoked_at === null) return {};
      for (const t of await repo.listTokens(this.db, false)) {
        if (t.name !== BOOTSTRAP_NAME) continue;
        await repo.revokeToken(this.db, t.id, at);
        await this.cache?.invalidate(t.token_hash);
        await this.bus?.publish('token.revoked', { token_id: t.id });
      }
      if (existing)
        throw new AppError('admin_token_revoked', 'ADMIN_TOKEN was revoked; choose a new one', 500);
      const id = 'tok_' + randomBytes(6).toString('hex');
      await repo.insertToken(this.db, {
        id,
        name: BOOTSTRAP_NAME,
        role: 'admin',
        token_hash: hash,
        created_at: at,
        created_by: 'ADMIN_TOKEN',
      });
      return {};
    }
    if ((await repo.countActiveAdminTokens(this.db)) > 0) return {};
    const { token } = await this.insert(BOOTSTRAP_NAME, 'admin', 'first start');
    return { created: token };
  }
}

function present(row: repo.TokenRow): TokenView {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    created_at: fromDbTime(row.created_at) as string,
    created_by: row.created_by,
    last_used_at: fromDbTime(row.last_used_at),
    revoked_at: fromDbTime(row.revoked_at),
  };
}
