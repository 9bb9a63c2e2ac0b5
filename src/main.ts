import type { AddressInfo } from 'node:net';
import { TokenService } from './auth/token-service.js';
import { InProcessBus, type Bus } from './bus/bus.js';
import { ClientService } from './clients/client-service.js';
import type { Config } from './config/schema.js';
import { buildHttpApp, type App } from './http/app.js';
import type { Services } from './http/services.js';
import { createLoggers, type ConsoleMode, type Logger } from './observability/logger.js';
import { openDatabase, pingDatabase, resolveDatabaseTarget, type DatabaseHandle } from './storage/db.js';
import { migrateToLatest } from './storage/migrate.js';
import { systemClock, type Clock } from './storage/values.js';
import { TaskService } from './tasks/task-service.js';

/** A running server and how to stop it. */
export interface RunningServer {
  config: Config;
  logger: Logger;
  database: DatabaseHandle;
  http: App;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8000. */
  httpUrl: string;
  /** The admin token created at first start, if one was (printed once by the CLI). */
  createdAdminToken?: string | undefined;
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
  const cleanups: (() => Promise<void> | void)[] = [() => loggers.close()];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const database = await openDatabase(resolveDatabaseTarget(config));
    cleanups.push(() => database.close());
    const applied = await migrateToLatest(database.db, database.dialect);
    logger.info({ database: database.describe, applied }, 'database ready');

    const bus: Bus = new InProcessBus((err) => logger.error({ err }, 'bus handler failed'));
    cleanups.push(() => bus.close());
    const tokens = new TokenService(database.db, clock);
    const services: Services = {
      tasks: new TaskService(database.db, bus, clock),
      clients: new ClientService(database.db, bus, clock),
      tokens,
      ping: () => pingDatabase(database.db),
    };
    const boot = await tokens.bootstrap(config.ADMIN_TOKEN);

    const http = await buildHttpApp({ config, services, logger, access: loggers.access });
    cleanups.push(() => http.close());
    await http.listen({ host: config.SERVER_HOST, port: config.SERVER_PORT });
    const address = http.server.address() as AddressInfo;
    const host =
      config.SERVER_HOST === '0.0.0.0' || config.SERVER_HOST === '::' ? '127.0.0.1' : config.SERVER_HOST;
    const httpUrl = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
    logger.info({ url: httpUrl, database: database.describe }, 'AI Farm server listening');

    let stopped: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      http,
      httpUrl,
      createdAdminToken: boot.created,
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
