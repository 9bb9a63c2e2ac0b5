import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../storage/schema.js';
import * as repo from '../storage/session-repo.js';
import { fromDbTime, toDbTime, type Clock } from '../storage/values.js';
import type { Principal } from './principal.js';

/** How long sessions last; defaults suit an operator's working day. */
export interface SessionLimits {
  /** A session unused this long ends (default 12 hours). */
  idleMs: number;
  /** A session ends this long after login, used or not (default 7 days). */
  absoluteMs: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { idleMs: 12 * 3_600_000, absoluteMs: 7 * 86_400_000 };

/** The idle expiry is pushed forward at most this often, so most requests only read. */
const TOUCH_INTERVAL_MS = 60_000;

/** A live session, as the HTTP layer needs it. */
export interface ActiveSession {
  /** SHA-256 of the cookie's secret: the row id, safe to log and compare. */
  id: string;
  principal: Principal;
  userId: number;
  expiresAt: string;
}

const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/**
 * Admin-panel sessions, kept in the database so several instances share them. The cookie
 * holds a 256-bit random secret; the database holds only its hash. The CSRF token is
 * derived from the secret (HMAC), so it needs no storage and dies with the session.
 */
export class SessionService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
  ) {}

  /** Opens a session; the secret goes into the cookie and nowhere else. */
  async create(
    user: { id: number; username: string },
    meta: { ip?: string | undefined; userAgent?: string | undefined } = {},
  ): Promise<{ secret: string; session: ActiveSession; csrfToken: string }> {
    const now = this.clock.now();
    const secret = randomBytes(32).toString('base64url');
    const row: repo.SessionRow = {
      id: sha256(secret),
      user_id: user.id,
      created_at: toDbTime(now, true),
      last_seen_at: toDbTime(now, true),
      expires_at: toDbTime(new Date(now.getTime() + this.limits.idleMs), true),
      absolute_expires_at: toDbTime(new Date(now.getTime() + this.limits.absoluteMs), true),
      ip: meta.ip?.slice(0, 64) ?? null,
      user_agent: meta.userAgent?.slice(0, 255) ?? null,
    };
    // Logins are rare: a good moment to sweep sessions that ended without a logout.
    await repo.deleteExpiredSessions(this.db, row.created_at);
    await repo.insertSession(this.db, row);
    return {
      secret,
      csrfToken: this.csrfToken(secret),
      session: {
        id: row.id,
        userId: user.id,
        principal: { kind: 'session', id: String(user.id), name: user.username, role: 'admin' },
        expiresAt: fromDbTime(row.expires_at) as string,
      },
    };
  }

  /** The session behind a cookie secret, or null when unknown or expired. */
  async authenticate(secret: string): Promise<ActiveSession | null> {
    if (secret.length < 20 || secret.length > 100) return null;
    const row = await repo.findSession(this.db, sha256(secret));
    if (!row) return null;
    const now = this.clock.now();
    const nowDb = toDbTime(now, true);
    if (String(row.expires_at) <= nowDb || String(row.absolute_expires_at) <= nowDb) {
      await repo.deleteSession(this.db, row.id);
      return null;
    }
    let expiresAt = String(row.expires_at);
    const lastSeen = Date.parse(fromDbTime(String(row.last_seen_at)) as string);
    if (lastSeen + TOUCH_INTERVAL_MS < now.getTime()) {
      const idle = toDbTime(new Date(now.getTime() + this.limits.idleMs), true);
      const absolute = String(row.absolute_expires_at);
      expiresAt = idle < absolute ? idle : absolute;
      await repo.touchSession(this.db, row.id, nowDb, expiresAt);
    }
    return {
      id: row.id,
      userId: Number(row.user_id),
      principal: { kind: 'session', id: String(row.user_id), name: row.username, role: row.role },
      expiresAt: fromDbTime(expiresAt) as string,
    };
  }

  /** The CSRF token that goes with a cookie secret. */
  csrfToken(secret: string): string {
    return createHmac('sha256', secret).update('ai-farm csrf v1').digest('base64url');
  }

  async destroy(sessionId: string): Promise<void> {
    await repo.deleteSession(this.db, sessionId);
  }
}
