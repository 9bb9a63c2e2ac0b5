import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Principal } from '../auth/principal.js';
import type { TokenService } from '../auth/token-service.js';
import { AppError, forbidden, unauthorized } from '../errors.js';
import type { Role } from '../storage/schema.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
  interface FastifyContextConfig {
    /** No token needed (health, docs). */
    public?: boolean;
    /** Roles allowed; default: admin only. */
    roles?: readonly Role[];
  }
}

/** Pulls the bearer token out of an Authorization header. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? (m[1] ?? null) : null;
}

/** A session (the admin panel's cookie) can stand in for a token; the panel issue plugs it in. */
export type SessionAuthenticator = (req: FastifyRequest) => Promise<Principal | null>;

/**
 * onRequest hook: every route needs a valid token unless marked public, and the token's
 * role must be one the route allows. Runs before the body is read.
 */
export function authHook(tokens: TokenService, sessions?: SessionAuthenticator) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const config = req.routeOptions.config;
    // The API docs' routes (registered by @fastify/swagger-ui) are public; matched by route,
    // not by the raw URL, so no request can borrow their exemption.
    const route = req.routeOptions.url ?? '';
    if (config.public || route === '/docs' || route.startsWith('/docs/')) return;
    const token = bearerToken(req.headers.authorization);
    let principal: Principal | null = null;
    if (token) principal = await tokens.authenticate(token);
    else if (sessions) principal = await sessions(req);
    if (!principal) {
      throw token
        ? unauthorized('the token is not valid (unknown or revoked)')
        : unauthorized('missing token: send Authorization: Bearer <token>');
    }
    req.principal = principal;
    const roles = config.roles ?? ['admin'];
    if (!roles.includes(principal.role)) {
      throw forbidden(
        `a ${principal.role} token may not use ${req.method} ${req.routeOptions.url ?? req.url}`,
      );
    }
  };
}

/** The caller, for handlers behind authHook. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new AppError('unauthorized', 'not authenticated', 401);
  return req.principal;
}
