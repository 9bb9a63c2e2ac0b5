import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody } from '../../api/common.js';
import { LoginBody, SessionView } from '../../api/session.js';
import type { LoginThrottle } from '../../auth/login-throttle.js';
import { normalizeUsername, type UserService } from '../../auth/user-service.js';
import { AppError } from '../../errors.js';
import { principalOf } from '../auth.js';
import { clearSessionCookie, foreignOrigin, setSessionCookie, type SessionAuth } from '../session-auth.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody };
const anyone = { roles: ['admin', 'user', 'worker'] as const };

/** Admin-panel login (POST), who am I (GET) and logout (DELETE) on /api/session. */
export const sessionRoutes =
  (deps: { users: UserService; auth: SessionAuth; throttle: LoginThrottle }): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/api/session',
      {
        config: { public: true },
        schema: {
          tags: ['session'],
          summary: 'Log in to the admin panel: sets the session cookie, returns the CSRF token',
          security: [],
          body: LoginBody,
          response: { 200: SessionView, ...errors },
        },
      },
      async (req, reply) => {
        // Login CSRF: another site must not log a browser into an account of its choosing.
        const foreign = foreignOrigin(req);
        if (foreign) {
          throw new AppError(
            'origin_forbidden',
            `log in from this server's own pages, not from ${foreign}`,
            403,
          );
        }
        const username = normalizeUsername(req.body.username);
        const attempt = await deps.throttle.begin(req.ip, username);
        if (!attempt.allowed) {
          void reply.header('retry-after', String(attempt.retryAfterSeconds));
          throw new AppError(
            'too_many_login_attempts',
            `too many failed logins; try again in ${attempt.retryAfterSeconds} s`,
            429,
            { retry_after_seconds: attempt.retryAfterSeconds },
          );
        }
        try {
          const user = await deps.users.verifyLogin(username, req.body.password);
          if (!user) {
            await deps.throttle.recordFailure(req.ip, username);
            req.log.warn({ username, remote_addr: req.ip }, 'failed admin-panel login');
            throw new AppError('invalid_credentials', 'wrong username or password', 401);
          }
          await deps.throttle.recordSuccess(req.ip, username);
          const { secret, session, csrfToken } = await deps.auth.sessions.create(user, {
            ip: req.ip,
            userAgent: req.headers['user-agent'],
          });
          setSessionCookie(req, reply, secret);
          req.log.info({ username, remote_addr: req.ip }, 'admin-panel login');
          return {
            kind: 'session' as const,
            username: user.username,
            user_id: user.id,
            role: user.role,
            csrf_token: csrfToken,
            expires_at: session.expiresAt,
          };
        } finally {
          attempt.release();
        }
      },
    );

    app.get(
      '/api/session',
      {
        config: anyone,
        schema: {
          tags: ['session'],
          summary: 'Who is logged in, with the CSRF token for this session',
          response: { 200: SessionView, ...errors },
        },
      },
      async (req) => {
        const principal = principalOf(req);
        const s = deps.auth.of(req);
        return {
          kind: principal.kind,
          username: principal.name,
          user_id: s ? s.session.userId : null,
          role: principal.role,
          csrf_token: s ? deps.auth.sessions.csrfToken(s.secret) : null,
          expires_at: s ? s.session.expiresAt : null,
        };
      },
    );

    app.delete(
      '/api/session',
      {
        config: anyone,
        schema: {
          tags: ['session'],
          summary: 'Log out: ends the session and clears its cookie',
          response: { 204: Type.Null(), ...errors },
        },
      },
      async (req, reply) => {
        const s = deps.auth.of(req);
        if (!s) throw new AppError('no_session', 'this request was not made with a session cookie', 400);
        await deps.auth.sessions.destroy(s.session.id);
        clearSessionCookie(req, reply);
        return reply.status(204).send(null);
      },
    );
  };
