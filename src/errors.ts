/**
 * The one application error type. Every error a user can cause carries a stable
 * `code`, the HTTP status it maps to and whether its message may be shown.
 * Unknown errors are logged and hidden by the HTTP and WebSocket error paths.
 */
export class AppError extends Error {
  constructor(
    /** Stable, machine-readable code such as `task_not_found`. */
    readonly code: string,
    message: string,
    /** HTTP status this error maps to. */
    readonly status: number = 400,
    /** Extra fields for the client, e.g. the allowed transitions. */
    readonly details?: Record<string, unknown>,
    /** Whether the message may be shown to the caller (false for internal errors). */
    readonly expose: boolean = true,
  ) {
    super(message);
    this.name = 'AppError';
  }
}

export const notFound = (what: string, id: string | number): AppError =>
  new AppError(`${what}_not_found`, `${what} ${id} does not exist`, 404);

export const badRequest = (code: string, message: string, details?: Record<string, unknown>): AppError =>
  new AppError(code, message, 400, details);

export const conflict = (code: string, message: string, details?: Record<string, unknown>): AppError =>
  new AppError(code, message, 409, details);

export const forbidden = (message: string): AppError => new AppError('forbidden', message, 403);

export const unauthorized = (message: string): AppError => new AppError('unauthorized', message, 401);

/** The database cannot be reached; callers answer 503 and retry later. */
export const databaseUnavailable = (cause: unknown): AppError => {
  const err = new AppError(
    'database_unavailable',
    'The database is unavailable; try again shortly',
    503,
    undefined,
    true,
  );
  err.cause = cause;
  return err;
};

const CONNECTION_ERROR_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ER_CON_COUNT_ERROR',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ER_SERVER_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'POOL_CLOSED',
  'SQLITE_BUSY',
  'SQLITE_IOERR',
  'SQLITE_CANTOPEN',
]);

/** True when `err` says the database connection is gone (as opposed to a bad query). */
export function isConnectionError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; fatal?: unknown; message?: unknown };
  if (typeof e.code === 'string' && CONNECTION_ERROR_CODES.has(e.code)) return true;
  if (e.fatal === true) return true;
  return (
    typeof e.message === 'string' &&
    /Lost connection to MySQL server|Connection lost|closed state/i.test(e.message)
  );
}
