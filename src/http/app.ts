import fastifyRateLimit from '@fastify/rate-limit';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
} from 'fastify';
import type { TokenService } from '../auth/token-service.js';
import type { RedisLink } from '../bus/redis-link.js';
import { sharedRateLimitStore } from '../cache/rate-limit-store.js';
import type { Config } from '../config/schema.js';
import { jsonTooDeep, tooDeepMessage } from '../api/json-depth.js';
import { AppError, badRequest } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { authHook, bearerToken, type SessionAuthenticator } from './auth.js';
import { errorHandler, formatValidationErrors } from './errors.js';
import { clientRoutes } from './routes/clients-routes.js';
import { healthRoutes } from './routes/health-routes.js';
import { metricsRoutes } from './routes/metrics-routes.js';
import { taskRoutes } from './routes/tasks-routes.js';
import { tokenRoutes } from './routes/tokens-routes.js';
import type { Services } from './services.js';
import { headerDeadline } from './header-deadline.js';
import { trustProxyOption } from './trust-proxy.js';
import { schemaCompiler } from './validators.js';

export type App = FastifyInstance;

export interface HttpAppOptions {
  config: Config;
  services: Services;
  logger: Logger;
  /** access.log: one line per request. */
  access: Logger;
  sessions?: SessionAuthenticator;
  /** More routes (model store, panel) registered by their own modules. */
  plugins?: ((app: App) => Promise<void>)[];
  /** With Redis, every instance counts RATE_LIMIT against one shared budget per address. */
  redis?: RedisLink;
  /** The model server's port once listening, for the original's task bodies (default MODEL_SERVER_PORT). */
  modelServerPort?: () => number;
}

/**
 * Model transfers of workers: the global model a rank downloads each round, the update
 * it uploads, and the code of its tasks. They are paced by the training rounds (and allowed only to the lease holder),
 * not by a person, so with a worker token they do not count against RATE_LIMIT, which is
 * meant for API callers. Without a valid worker token they count like any request.
 */
export const WORKER_TRANSFER_ROUTES: ReadonlySet<string> = new Set([
  '/api/tasks/:id/rounds/:round/model',
  '/api/tasks/:id/model',
  '/api/tasks/:id/rounds/:round/updates/:rank',
  '/api/bundles/:digest',
  '/api/tasks/:id/rounds/:round/updates/:rank/uploads/:upload',
]);

/** Requests the rate limit does not count: health checks, and worker model transfers. */
function exemptFromRateLimit(tokens: TokenService) {
  return async (req: FastifyRequest): Promise<boolean> => {
    const route = req.routeOptions.url;
    if (route === '/health' || route === '/ready') return true;
    if (route === undefined || !WORKER_TRANSFER_ROUTES.has(route)) return false;
    const token = bearerToken(req.headers.authorization);
    if (!token) return false;
    // Cached: the auth hook that follows finds the same principal without a second read.
    const principal = await tokens.authenticate(token).catch(() => null);
    return principal?.role === 'worker';
  };
}

/** Parses RATE_LIMIT ("60/minute") into the plugin's terms; null when "off". */
export function parseRateLimit(spec: string): { max: number; timeWindow: number } | null {
  if (spec === 'off') return null;
  const [n, unit] = spec.split('/');
  const ms = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 }[unit ?? 'minute'] ?? 60_000;
  return { max: Number(n), timeWindow: ms };
}

/** Builds the HTTP API: validation, auth, rate limits, OpenAPI, access log, routes. */
export async function buildHttpApp(opts: HttpAppOptions): Promise<App> {
  const { config, logger } = opts;
  const app = Fastify({
    loggerInstance: logger.child({ component: 'http' }) as FastifyBaseLogger,
    // access.log has one line per request; Fastify's own request logs would repeat it.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.MAX_BODY_BYTES,
    // Off by default: X-Forwarded-* count only from the proxies TRUST_PROXY names.
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    // Silent senders do not hold a socket forever: a socket idle for 2 minutes is closed
    // (headers must arrive within HEADERS_TIMEOUT, below). There is no limit on a whole
    // request, because a multi-GB model upload that keeps flowing may take longer than any.
    requestTimeout: 0,
    connectionTimeout: 120_000,
    // Headers, though, must arrive within HEADERS_TIMEOUT: a socket dribbling a byte every few
    // seconds (slowloris) would otherwise reset the idle timer forever. Node checks the
    // deadline on an interval, so it runs at a quarter of the timeout (at most 5 s).
    http: headerDeadline(config.HEADERS_TIMEOUT),
    ajv: { customOptions: {} },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Bodies are validated strictly (a "5" is not a number); query strings and path
  // parameters are text by nature and are coerced, integers only from canonical digits.
  app.setValidatorCompiler(schemaCompiler());
  app.setSchemaErrorFormatter((errors, part) => formatValidationErrors(errors, part));
  // The API speaks JSON; other bodies get 415 rather than a confusing validation error.
  app.removeContentTypeParser('text/plain');
  // Fastify's own JSON parser (prototype-poisoning checks included), behind a nesting limit.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonTooDeep(body as string)) done(badRequest('too_deep', tooDeepMessage('the JSON body')), undefined);
    else parseJson(req, body as string, done);
  });
  app.setErrorHandler(errorHandler(logger));
  app.setNotFoundHandler((req) => {
    throw new AppError('route_not_found', `no route ${req.method} ${req.url.split('?')[0]}`, 404);
  });

  // Shutdown: Fastify answers new requests with 503, but a request already in flight
  // would leave its keep-alive connection open afterwards, holding close() (and the
  // process) until the client hangs up. Answering it with `Connection: close` ends it.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) void reply.header('connection', 'close');
  });

  app.addHook('onResponse', async (req, reply) => {
    opts.access.info({
      method: req.method,
      path: req.url.split('?')[0],
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 10) / 10,
      remote_addr: req.ip,
      principal: req.principal?.name,
    });
  });

  const limit = parseRateLimit(config.RATE_LIMIT);
  if (limit) {
    await app.register(fastifyRateLimit, {
      // Not per route (the plugin's global mode): route hooks run after the app's
      // onRequest hooks, so requests with a bad token would be refused by authHook before
      // being counted, and guessing tokens would be free. Added below as an app hook,
      // ahead of authHook, it counts every request, unknown routes included.
      global: false,
      max: limit.max,
      timeWindow: limit.timeWindow,
      keyGenerator: (req) => req.ip,
      allowList: exemptFromRateLimit(opts.services.tokens),
      // Shared counts with Redis; while Redis is away, each instance counts on its own.
      ...(opts.redis ? { store: sharedRateLimitStore(opts.redis) } : {}),
      errorResponseBuilder: (_req, ctx) =>
        new AppError(
          'rate_limited',
          `rate limit of ${config.RATE_LIMIT} exceeded; retry in ${ctx.after}`,
          429,
          {
            limit: ctx.max,
          },
        ),
    });
    app.addHook('onRequest', app.rateLimit());
  }

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'AI Farm API',
        version: '1',
        description:
          'Tasks, clients, tokens and models of an AI Farm server. Send Authorization: Bearer <token>.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());

  app.addHook('onRequest', authHook(opts.services.tokens, opts.sessions));

  await app.register(healthRoutes(opts.services));
  const { config: c } = opts;
  await app.register(
    taskRoutes(opts.services, {
      modelServerPort: opts.modelServerPort ?? (() => c.MODEL_SERVER_PORT),
      serverHost: c.SERVER_HOST,
      defaultEpochs: c.DEFAULT_EPOCHS,
      defaultBatchSize: c.DEFAULT_BATCH_SIZE,
    }),
  );
  await app.register(clientRoutes(opts.services));
  await app.register(tokenRoutes(opts.services));
  await app.register(metricsRoutes(opts.services));
  for (const p of opts.plugins ?? []) await app.register(p);
  return app as unknown as App;
}
