import type { ErrorBody } from '../../src/api/common.js';

/**
 * The panel's one way to reach the server: same-origin fetch with the session cookie,
 * JSON in and out, and the CSRF token on every request that changes something.
 */

/** An error answer of the API, with the fields it names (e.g. "requirements/min_cpu_cores"). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }

  /** Field paths without the "body/" or "querystring/" prefix. */
  get fields(): string[] {
    const f = this.details.fields;
    return Array.isArray(f) ? f.map((x) => String(x).replace(/^(body|querystring|params)\/?/, '')) : [];
  }

  /**
   * The message for each named field: the API joins one message per field with "; ", each
   * starting with the field's path ("body/requirements/min_cpu_cores must be >= 1").
   */
  fieldMessages(): Record<string, string> {
    const out: Record<string, string> = {};
    const parts = this.message.split('; ');
    for (const field of this.fields) {
      const full = `body/${field}`;
      const part = parts.find((p) => p.startsWith(full + ' ')) ?? parts.find((p) => p.startsWith(full));
      out[field] = part ?? this.message;
    }
    return out;
  }
}

let csrfToken: string | null = null;
let onUnauthorized: () => void = () => {};

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called when the session has ended (401), so the app can show the login page. */
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network_error', 'The server cannot be reached; check the connection.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: a proxy's error page. Reported below by status.
  }
  if (!res.ok) {
    const err = (parsed as ErrorBody | null)?.error;
    const retry = Number(res.headers.get('retry-after'));
    const e = new ApiError(
      res.status,
      err?.code ?? 'http_' + res.status,
      err?.message ?? `${res.status} ${res.statusText}`,
      err?.details ?? {},
      Number.isFinite(retry) && retry > 0 ? retry : null,
    );
    // Login itself answers 401 for a wrong password: that is not an ended session.
    if (res.status === 401 && path !== '/api/session') onUnauthorized();
    throw e;
  }
  return parsed as T;
}

/** A message for people from any error. */
export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

/** Whether the server lacks this route (data that a later server version provides). */
export function isMissingRoute(err: unknown): boolean {
  return err instanceof ApiError && err.status === 404 && err.code === 'route_not_found';
}
