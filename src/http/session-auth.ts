import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ActiveSession, SessionService } from '../auth/session-service.js';
import { AppError, unauthorized } from '../errors.js';
import type { SessionAuthenticator } from './auth.js';

/** The session cookie; httpOnly so page scripts never see it. */
export const SESSION_COOKIE = 'aifarm_session';
export const CSRF_HEADER = 'x-csrf-token';

/** Methods that change nothing; every other method needs the CSRF token with a cookie. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** What a session-authenticated request carries, for the session routes and live streams. */
export interface RequestSession {
  session: ActiveSession;
  /** The cookie's secret, to derive the CSRF token and to re-check the session later. */
  secret: string;
}

/**
 * Plugs admin-panel sessions into the HTTP auth hook: a request without a bearer token may
 * present the session cookie instead. A state-changing request with the cookie must also
 * carry X-CSRF-Token; SameSite=Strict already keeps other sites' requests from carrying the
 * cookie, and the token covers browsers and subdomains where SameSite falls short.
 */
export class SessionAuth {
  private readonly byRequest = new WeakMap<FastifyRequest, RequestSession>();

  constructor(readonly sessions: SessionService) {}

  readonly authenticate: SessionAuthenticator = async (req) => {
    const secret = readSessionCookie(req);
    if (!secret) return null;
    const foreign = foreignOrigin(req);
    if (foreign) {
      throw new AppError(
        'origin_forbidden',
        `a request with the session cookie must come from this server's own pages, not from ${foreign}`,
        403,
      );
    }
    const session = await this.sessions.authenticate(secret);
    if (!session) throw unauthorized('the session has ended; log in again');
    if (!SAFE_METHODS.has(req.method)) {
      const sent = req.headers[CSRF_HEADER];
      const expected = this.sessions.csrfToken(secret);
      if (typeof sent !== 'string' || !sameSecret(sent, expected)) {
        throw new AppError(
          'csrf_token_invalid',
          `a ${req.method} with the session cookie must send the CSRF token (from POST or GET /api/session) as X-CSRF-Token`,
          403,
        );
      }
    }
    this.byRequest.set(req, { session, secret });
    return session.principal;
  };

  /** The session behind this request, when it was authenticated by cookie. */
  of(req: FastifyRequest): RequestSession | undefined {
    return this.byRequest.get(req);
  }
}

/**
 * Where a cookie-carrying request came from when that is not this server's own pages: the
 * browser's Sec-Fetch-Site verdict, or an Origin whose host is not the Host asked for. Null
 * when it looks same-origin (browsers omit Origin on same-origin GETs; tools omit both).
 * SameSite=Strict keeps other sites' cookies out already; this also shuts out sibling
 * subdomains and reads (the live event stream) that CSRF tokens do not cover.
 */
export function foreignOrigin(req: FastifyRequest): string | null {
  const site = req.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return `a ${site} page`;
  const origin = req.headers.origin;
  if (origin === undefined) return null;
  let host: string | null = null;
  try {
    host = new URL(origin).host;
  } catch {
    // "null" (sandboxed frames, privacy redirects) or garbage: foreign.
  }
  return host !== null && host !== '' && host === req.headers.host ? null : `origin ${origin.slice(0, 200)}`;
}

export function readSessionCookie(req: FastifyRequest): string | null {
  const header = req.headers.cookie;
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim() || null;
  }
  return null;
}

/**
 * The Set-Cookie value. Written by hand rather than with @fastify/cookie, whose types would
 * claim `req.cookies` exists on every request; the secret is base64url and needs no escaping.
 */
function cookie(req: FastifyRequest, value: string, clear: boolean): string {
  const attrs = [`${SESSION_COOKIE}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Strict'];
  if (req.protocol === 'https') attrs.push('Secure');
  if (clear) attrs.push('Max-Age=0', 'Expires=Thu, 01 Jan 1970 00:00:00 GMT');
  return attrs.join('; ');
}

/** Sets the session cookie: httpOnly, SameSite=Strict, Secure when the request came over TLS. */
export function setSessionCookie(req: FastifyRequest, reply: FastifyReply, secret: string): void {
  void reply.header('set-cookie', cookie(req, secret, false));
}

export function clearSessionCookie(req: FastifyRequest, reply: FastifyReply): void {
  void reply.header('set-cookie', cookie(req, '', true));
}

function sameSecret(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
