import type { AddressInfo } from 'node:net';
import { TokenService } from './auth/token-service.js';
import { InProcessBus, type Bus } from './bus/bus.js';
import { RedisPresence } from './bus/presence.js';
import { RedisBus } from './bus/redis-bus.js';
import { RedisLink } from './bus/redis-link.js';
import { TaskNewsBus } from './bus/task-news.js';
import { RedisCache } from './cache/redis-cache.js';
import { tokenCache } from './cache/token-cache.js';
import { createInstanceId } from './cluster/instance-id.js';
import { ClientService } from './clients/client-service.js';
import type { Config } from './config/schema.js';
import { createFarm } from './farm.js';
import { buildHttpApp, type App } from './http/app.js';
import { createPanel } from './http/panel.js';
import type { Services } from './http/services.js';
import { createLoggers, type ConsoleMode, type Logger } from './observability/logger.js';
import { openDatabase, pingDatabase, resolveDatabaseTarget, type DatabaseHandle } from './storage/db.js';
import { migrateToLatest } from './storage/migrate.js';
import { systemClock, type Clock } from './storage/values.js';
import { TaskService } from './tasks/task-service.js';
import { tusRoutes } from './http/routes/tus-routes.js';
import { modelRoutes, buildModelServer } from './http/routes/models-routes.js';
import { trainingRoutes } from './http/routes/training-routes.js';
import { torchServeHook } from './training/coordinator/torchserve.js';
import { ResumableUploads } from './training/coordinator/resumable.js';
import { UploadService } from './training/coordinator/uploads.js';
import { TrainingService } from './training/training-service.js';
import { CodeService } from './code/code-service.js';
import { CodeStore } from './code/code-store.js';
import { codeRoutes, modelServerCodeRoutes } from './http/routes/code-routes.js';

/** A running server and how to stop it. */
export interface RunningServer {
  config: Config;
  /** This process among the farm's server instances (random, made at start). */
  instanceId: string;
  logger: Logger;
  database: DatabaseHandle;
  http: App;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8000. */
  httpUrl: string;
  /** URL workers connect to on WEBSOCKET_PORT, e.g. ws://127.0.0.1:8765. */
  wsUrl: string;
  /** The services behind the API, for programs that embed the server (benchmarks, the demo). */
  services: Services;
  /** Base URL of the model server on MODEL_SERVER_PORT, e.g. http://127.0.0.1:5000. */
  modelUrl: string;
  /** The admin token created at first start, if one was (printed once by the CLI). */
  createdAdminToken?: string | undefined;
  /** The first admin-panel user's generated password, if this start created one (printed once by the CLI). */
  createdAdminPassword?: string | undefined;
  /** Stops in order: no new requests, finish those in flight, close the database, flush logs. */
  stop(): Promise<void>;
}

export interface StartOptions {
  console?: ConsoleMode;
  clock?: Clock;
}

/** The composition root: the one place that wires concrete parts together. */
export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const clock = opts.clock ?? systemClock;
  const loggers = createLoggers({
    logDir: config.LOG_DIR,
    level: config.LOG_LEVEL,
    console: opts.console ?? 'off',
  });
  const { logger } = loggers;
  const instanceId = createInstanceId();
  const cleanups: (() => Promise<void> | void)[] = [() => loggers.close()];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const database = await openDatabase(resolveDatabaseTarget(config));
    cleanups.push(() => database.close());
    const applied = await migrateToLatest(database.db, database.dialect);
    logger.info({ database: database.describe, applied }, 'database ready');

    // With Redis, control messages, wake-ups, cache invalidations, presence and rate-limit
    // counts are shared with the other instances; without it, all of them stay in-process.
    const redis = config.REDIS_URL
      ? new RedisLink({ url: config.REDIS_URL, prefix: config.REDIS_KEY_PREFIX, instanceId, logger })
      : null;
    if (redis) cleanups.push(() => redis.close());
    // Task progress news goes out at most twice a second per task (src/bus/task-news.ts).
    const bus: Bus = new TaskNewsBus(
      redis
        ? new RedisBus(redis, logger)
        : new InProcessBus((err) => logger.error({ err }, 'bus handler failed')),
    );
    cleanups.push(() => bus.close());
    const cache = redis ? new RedisCache(redis, logger) : null;
    if (cache) cleanups.push(() => cache.close());
    const tokens = new TokenService(database.db, clock, tokenCache(cache), bus);
    let modelBase = '';
    /** The model server's port once it listens (MODEL_SERVER_PORT may be 0: any free port). */
    let modelServerPort = config.MODEL_SERVER_PORT;
    // What the farm and the panel are both built from.
    const shared = { config, db: database.db, bus, tokens, clock, logger };
    const farm = createFarm({
      ...shared,
      instanceId,
      ...(redis ? { presence: (local) => new RedisPresence(redis, local, logger) } : {}),
      ...(config.TORCHSERVE_URL
        ? {
            onTrainingComplete: torchServeHook({
              torchserveUrl: config.TORCHSERVE_URL,
              modelBase: () => modelBase,
              db: database.db,
              clock,
              logger,
            }),
          }
        : {}),
    });
    const code = new CodeService(
      database.db,
      new CodeStore({
        dir: config.MODEL_CACHE_DIR,
        maxBytes: config.MAX_CODE_BYTES,
        maxUnpackedBytes: config.MAX_CODE_UNPACKED_BYTES,
        maxEntries: config.MAX_CODE_ENTRIES,
      }),
      clock,
    );
    const services: Services = {
      tasks: new TaskService(
        database.db,
        bus,
        clock,
        { defaultEpochs: config.DEFAULT_EPOCHS, defaultBatchSize: config.DEFAULT_BATCH_SIZE },
        farm.writes,
        farm.dispatcher,
        code,
      ),
      clients: new ClientService(database.db, bus, clock, farm.presence),
      tokens,
      monitoring: farm.monitoring,
      ping: () => pingDatabase(database.db),
    };
    const boot = await tokens.bootstrap(config.ADMIN_TOKEN);
    const training = new TrainingService({ db: database.db, tasks: services.tasks, registry: farm.registry });
    const uploads = new UploadService({
      db: database.db,
      registry: farm.registry,
      coordinator: farm.training,
      paths: farm.trainingPaths,
      maxUploadBytes: config.MAX_UPLOAD_BYTES,
      touch: (clientId) => farm.gateway.touch(clientId),
      ...(farm.cluster ? { remoteLease: farm.cluster.remoteLease.bind(farm.cluster) } : {}),
    });
    const resumable = new ResumableUploads({
      db: database.db,
      uploads,
      paths: farm.trainingPaths,
      maxUploadBytes: config.MAX_UPLOAD_BYTES,
      expiryMs: config.UPLOAD_EXPIRY * 1000,
      now: () => clock.now().getTime(),
      touch: (clientId) => farm.gateway.touch(clientId),
    });
    const trainingPlugin = async (app: App): Promise<void> => {
      await app.register(modelRoutes(training, uploads));
      await app.register(tusRoutes(resumable, config.MAX_UPLOAD_BYTES));
      await app.register(trainingRoutes(training));
      await app.register(codeRoutes(code));
    };

    const panel = await createPanel({ ...shared, monitoring: farm.monitoring });
    const http = await buildHttpApp({
      config,
      services,
      logger,
      access: loggers.access,
      sessions: panel.sessions,
      plugins: [panel.plugin, trainingPlugin],
      modelServerPort: () => modelServerPort,
      ...(redis ? { redis } : {}),
    });
    farm.gateway.attach(http.server, '/ws');
    // Stopped after the HTTP server: requests in flight may still queue writes.
    cleanups.push(() => farm.stop());
    resumable.start();
    cleanups.push(() => resumable.stop());
    const wsPort = await farm.start();
    cleanups.push(() => http.close());
    await http.listen({ host: config.SERVER_HOST, port: config.SERVER_PORT });
    // Closed first at shutdown (cleanups run in reverse): downloads end before the farm stops.
    const modelServer = await buildModelServer({
      tokens,
      authFailures: farm.authFailures,
      training,
      logger,
      headersTimeout: config.HEADERS_TIMEOUT,
      plugins: [modelServerCodeRoutes(code, tokens, config.ALLOW_ANONYMOUS_CLIENTS)],
    });
    cleanups.push(() => modelServer.close());
    await modelServer.listen({ host: config.SERVER_HOST, port: config.MODEL_SERVER_PORT });
    const address = http.server.address() as AddressInfo;
    const modelPort = (modelServer.server.address() as AddressInfo).port;
    const host =
      config.SERVER_HOST === '0.0.0.0' || config.SERVER_HOST === '::' ? '127.0.0.1' : config.SERVER_HOST;
    const hostPart = host.includes(':') ? `[${host}]` : host;
    const httpUrl = `http://${hostPart}:${address.port}`;
    const wsUrl = `ws://${hostPart}:${wsPort}`;
    const modelUrl = `http://${hostPart}:${modelPort}`;
    modelBase = modelUrl;
    modelServerPort = modelPort;
    logger.info(
      { url: httpUrl, websocket: wsUrl, database: database.describe, instance: instanceId, redis: !!redis },
      'AI Farm server listening',
    );

    let stopped: Promise<void> | undefined;
    return {
      config,
      instanceId,
      logger,
      database,
      http,
      httpUrl,
      wsUrl,
      services,
      modelUrl,
      createdAdminToken: boot.created,
      createdAdminPassword: panel.createdAdminPassword,
      stop: () => {
        stopped ??= (async () => {
          logger.info('shutting down');
          await cleanup();
        })();
        return stopped;
      },
    };
  } catch (err) {
    logger.error({ err }, 'server failed to start');
    await cleanup();
    throw err;
  }
}
