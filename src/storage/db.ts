import { mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, MysqlDialect, SqliteDialect, sql, type MysqlPool, type MysqlPoolConnection } from 'kysely';
import { createPool, createConnection, type Pool, type PoolConnection } from 'mysql2';
import type { Config } from '../config/schema.js';
import { startCheckpointer } from './checkpointer.js';
import type { Database } from './schema.js';

export type Dialect = 'sqlite' | 'mysql';

/** Where the state lives, resolved from DATABASE_URL, db_config or DATA_DIR. */
export type DatabaseTarget =
  { dialect: 'sqlite'; file: string } | { dialect: 'mysql'; options: MysqlOptions };

/** What it takes to reach a MySQL or MariaDB database. */
export interface MysqlOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** Milliseconds a query may take before its connection is treated as lost (DB_QUERY_TIMEOUT). */
  queryTimeoutMs?: number;
}

/** DB_QUERY_TIMEOUT's default, in milliseconds. */
const DEFAULT_QUERY_TIMEOUT_MS = 15_000;

/** An open database with its dialect, closed with `close()`. */
export interface DatabaseHandle {
  db: Kysely<Database>;
  dialect: Dialect;
  /** Human-readable location, password masked. */
  describe: string;
  close(): Promise<void>;
}

/** Chooses the database from the config: DATABASE_URL, then db_config, then SQLite in DATA_DIR. */
export function resolveDatabaseTarget(
  config: Pick<Config, 'DATABASE_URL' | 'db_config' | 'DATA_DIR'> & Partial<Pick<Config, 'DB_QUERY_TIMEOUT'>>,
): DatabaseTarget {
  const url = config.DATABASE_URL.trim();
  const queryTimeoutMs =
    config.DB_QUERY_TIMEOUT === undefined ? DEFAULT_QUERY_TIMEOUT_MS : config.DB_QUERY_TIMEOUT * 1000;
  if (/^mysql:\/\//i.test(url) || /^mariadb:\/\//i.test(url)) {
    const u = new URL(url.replace(/^mariadb:/i, 'mysql:'));
    const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || 'ai_farm';
    return {
      dialect: 'mysql',
      options: {
        host: u.hostname || 'localhost',
        port: u.port ? Number(u.port) : 3306,
        user: decodeURIComponent(u.username || 'root'),
        password: decodeURIComponent(u.password),
        database,
        queryTimeoutMs,
      },
    };
  }
  if (url) {
    const file = url.replace(/^(sqlite|file):(\/\/)?/i, '');
    return { dialect: 'sqlite', file: isAbsolute(file) ? file : resolve(file) };
  }
  if (config.db_config) {
    const c = config.db_config;
    return {
      dialect: 'mysql',
      options: {
        host: c.host,
        port: c.port ?? 3306,
        user: c.user,
        password: c.password,
        database: c.database,
        queryTimeoutMs,
      },
    };
  }
  return { dialect: 'sqlite', file: resolve(join(config.DATA_DIR, 'ai_farm.sqlite')) };
}

/** Opens the database, creating the SQLite file or the MySQL database when missing. */
export async function openDatabase(target: DatabaseTarget): Promise<DatabaseHandle> {
  if (target.dialect === 'sqlite') return openSqlite(target.file);
  return openMysql(target.options);
}

function openSqlite(file: string): DatabaseHandle {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const native = new SqliteDatabase(file);
  // WAL: readers never block the writer, and a committed transaction survives a killed process.
  native.pragma('journal_mode = WAL');
  native.pragma('synchronous = NORMAL');
  native.pragma('foreign_keys = ON');
  native.pragma('busy_timeout = 5000');
  // A WAL grown by a burst of writes is cut back to this size once it starts over.
  native.pragma('journal_size_limit = 67108864');
  // Checkpoints (which fsync) run on a worker thread, not inside a commit on the event loop.
  const checkpointer =
    file === ':memory:'
      ? null
      : startCheckpointer(
          file,
          (pages) => native.pragma(`wal_autocheckpoint = ${pages}`),
          (err) =>
            process.emitWarning(
              `SQLite checkpoint thread stopped (${err instanceof Error ? err.message : String(err)}); checkpoints run in commits again`,
            ),
        );
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(native) }) });
  const close = async () => {
    await checkpointer?.stop();
    await db.destroy();
  };
  return { db, dialect: 'sqlite', describe: `sqlite:${file}`, close };
}

/** Most distinct statements kept prepared (IN lists of many lengths make many). */
const STATEMENT_CACHE_SIZE = 500;

/**
 * Kysely prepares every statement anew; compiling the same SQL again was a fifth of the
 * server's time per task in the dispatch benchmark. Statements are prepared once and
 * reused (Kysely runs one statement at a time on the connection, so reuse is safe).
 */
function withStatementCache(native: SqliteDatabase.Database): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  const prepare = (source: string): SqliteDatabase.Statement => {
    let stmt = cache.get(source);
    if (!stmt) {
      stmt = native.prepare(source);
      // Full: the oldest goes, so statements of a later workload are kept too.
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      cache.set(source, stmt);
    }
    return stmt;
  };
  return new Proxy(native, {
    get(target, prop, receiver) {
      if (prop === 'prepare') return prepare;
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function openMysql(options: MysqlOptions): Promise<DatabaseHandle> {
  await ensureMysqlDatabase(options);
  const { queryTimeoutMs = DEFAULT_QUERY_TIMEOUT_MS, ...connection } = options;
  const pool = createPool({
    ...connection,
    charset: 'utf8mb4_general_ci',
    dateStrings: true,
    timezone: 'Z',
    connectionLimit: 10,
    enableKeepAlive: true,
    connectTimeout: 5000,
    // Big enough for JSON results; models never travel through the database.
    maxPreparedStatements: 256,
  });
  // Each new connection speaks UTC so DATETIME values mean the same on every instance.
  pool.on('connection', (conn) => {
    conn.query("SET time_zone = '+00:00'");
  });
  const db = new Kysely<Database>({
    dialect: new MysqlDialect({ pool: withQueryTimeout(pool, queryTimeoutMs) }),
  });
  const describe = `mysql://${options.user}@${options.host}:${options.port}/${options.database}`;
  return { db, dialect: 'mysql', describe, close: () => db.destroy() };
}

/**
 * mysql2 waits forever for the answer of a database that vanished without closing the
 * connection (a network partition, a paused VM): requests would hang and the pool would
 * fill with dead connections. Every query gets a deadline instead; past it the connection
 * is destroyed (the pool opens a fresh one later) and the caller gets a
 * PROTOCOL_SEQUENCE_TIMEOUT error, which the HTTP layer answers as 503 database_unavailable.
 */
function withQueryTimeout(pool: Pool, timeoutMs: number): MysqlPool {
  // One wrapper per pooled connection, so Kysely sees the same connection each time.
  const wrapped = new WeakMap<PoolConnection, MysqlPoolConnection>();
  const wrap = (conn: PoolConnection) => {
    let w = wrapped.get(conn);
    if (!w) wrapped.set(conn, (w = timedConnection(conn, timeoutMs)));
    return w;
  };
  return {
    getConnection: (callback) => pool.getConnection((err, conn) => callback(err, conn && wrap(conn))),
    end: (callback) => pool.end(callback),
  };
}

function timedConnection(conn: PoolConnection, timeoutMs: number): MysqlPoolConnection {
  // One function behind Kysely's two overloads (with and without a callback).
  const query = (sql: string, parameters: unknown[], callback?: (error: unknown, result: never) => void) => {
    // Streams may legitimately run long; only callback queries get the deadline.
    if (!callback) return conn.query(sql, parameters);
    // Our own timer rather than mysql2's `timeout` option: mysql2 leaves that timer
    // running when the connection dies first, which holds the process open at exit.
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      conn.destroy();
      const err = Object.assign(new Error(`the database did not answer within ${timeoutMs} ms`), {
        code: 'PROTOCOL_SEQUENCE_TIMEOUT',
        fatal: true,
      });
      callback(err, undefined as never);
    }, timeoutMs);
    conn.query(sql, parameters, (err, result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      callback(err, result as never);
    });
  };
  return { query: query as MysqlPoolConnection['query'], release: () => conn.release() };
}

/** Creates the MySQL database when it does not exist (the configured user may create it). */
async function ensureMysqlDatabase(options: MysqlOptions): Promise<void> {
  const conn = createConnection({
    host: options.host,
    port: options.port,
    user: options.user,
    password: options.password,
    connectTimeout: 5000,
  });
  try {
    await conn
      .promise()
      .query(
        `CREATE DATABASE IF NOT EXISTS \`${options.database.replace(/`/g, '``')}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`,
      );
  } finally {
    conn.destroy();
  }
}

/** A cheap round trip that proves the database answers. */
export async function pingDatabase(db: Kysely<Database>): Promise<void> {
  await sql`select 1`.execute(db);
}
