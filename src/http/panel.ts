import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { LoginThrottle, type ThrottleLimits } from '../auth/login-throttle.js';
import type { ScryptParams } from '../auth/password.js';
import { SessionService, type SessionLimits } from '../auth/session-service.js';
import type { TokenService } from '../auth/token-service.js';
import { UserService } from '../auth/user-service.js';
import type { Bus } from '../bus/bus.js';
import type { Config } from '../config/schema.js';
import { unauthorized } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { EventHub, type EventHubOptions } from '../panel/event-hub.js';
import { OverviewService, type SeedMetricsSource } from '../panel/overview-service.js';
import type { Database } from '../storage/schema.js';
import type { Clock } from '../storage/values.js';
import type { App } from './app.js';
import { bearerToken, type SessionAuthenticator } from './auth.js';
import { eventsRoutes } from './routes/events-routes.js';
import { panelRoutes } from './routes/panel-routes.js';
import { sessionRoutes } from './routes/session-routes.js';
import { usersRoutes } from './routes/users-routes.js';
import { SessionAuth } from './session-auth.js';

export interface PanelDeps {
  config: Pick<Config, 'ADMIN_USERNAME' | 'ADMIN_PASSWORD'>;
  db: Kysely<Database>;
  bus: Bus;
  tokens: TokenService;
  clock: Clock;
  logger: Logger;
  /** GET /api/metrics' source, so the overview shows the same utilization (optional). */
  monitoring?: SeedMetricsSource | undefined;
  /** Test knobs; production uses the defaults documented on each type. */
  tuning?: {
    scrypt?: ScryptParams;
    sessions?: SessionLimits;
    throttle?: ThrottleLimits;
    events?: EventHubOptions;
    /** Folder of the built panel (default web/dist). */
    root?: string;
  };
}

/** The admin panel's server side, ready to plug into buildHttpApp. */
export interface Panel {
  /** For HttpAppOptions.sessions: the session cookie stands in for a bearer token. */
  sessions: SessionAuthenticator;
  /** For HttpAppOptions.plugins: login, users, live events, overview and the static panel. */
  plugin: (app: App) => Promise<void>;
  /** The first admin's generated password, when this start created one (printed once by the CLI). */
  createdAdminPassword: string | undefined;
  users: UserService;
}

/**
 * Builds the admin panel: makes sure a first admin exists, then hands back the session
 * authenticator and the routes. Its live stream stops when the HTTP server closes.
 */
export async function createPanel(deps: PanelDeps): Promise<Panel> {
  const t = deps.tuning ?? {};
  const users = new UserService(deps.db, deps.clock, t.scrypt);
  const boot = await users.bootstrap(deps.config.ADMIN_USERNAME, deps.config.ADMIN_PASSWORD);
  if (boot.createdPassword)
    deps.logger.info({ username: deps.config.ADMIN_USERNAME }, 'first admin user created');
  const auth = new SessionAuth(new SessionService(deps.db, deps.clock, t.sessions));
  const throttle = new LoginThrottle(deps.db, deps.clock, t.throttle);
  const overview = new OverviewService(deps.db, deps.clock, { metrics: deps.monitoring });
  const hub = new EventHub(deps.bus, overview, deps.logger.child({ component: 'panel' }), t.events);

  // The same verdict and messages as the auth hook, for paths the public panel route catches.
  const requireAuth = async (req: FastifyRequest) => {
    const token = bearerToken(req.headers.authorization);
    const principal = token ? await deps.tokens.authenticate(token) : await auth.authenticate(req);
    if (!principal)
      throw unauthorized(
        token
          ? 'the token is not valid (unknown or revoked)'
          : 'missing token: send Authorization: Bearer <token>',
      );
  };

  const plugin = async (app: App) => {
    // Open streams would keep the server from closing: end them first.
    app.addHook('preClose', async () => hub.close());
    hub.start();
    await app.register(sessionRoutes({ users, auth, throttle }));
    await app.register(usersRoutes({ users, auth }));
    await app.register(eventsRoutes({ hub, overview, auth, tokens: deps.tokens }));
    await app.register(panelRoutes({ root: t.root, requireAuth }));
  };
  return { sessions: auth.authenticate, plugin, createdAdminPassword: boot.createdPassword, users };
}
