import type {
  CreateTaskBody,
  ListTasksQuery,
  Task,
  TaskEvent,
  TaskEventsQuery,
  TaskMetricsView,
  TaskStatus,
} from './tasks.js';

/** How to reach the HTTP API. */
export interface ApiClientOptions {
  /** Base URL, e.g. http://host:8000 (a trailing slash is fine). */
  baseUrl: string;
  /** An API token (role user or admin for tasks), sent as `Authorization: Bearer`. */
  token?: string | undefined;
  /** Per-request timeout, ms. Default 30 000. */
  timeoutMs?: number;
  /** The fetch to use. Default: the global one. */
  fetch?: typeof fetch;
}

/**
 * The API refused a request (`status` >= 400, `code` and `message` from its
 * `{error:{code,message}}` body), or could not be reached (`status` 0, code `unreachable`).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
    /** From Retry-After (429, 503): when asking again may succeed, ms. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** A page of tasks. */
export interface TaskList {
  items: Task[];
  total: number;
  limit: number;
  offset: number;
}

/** A typed client of the HTTP API: the task endpoints, with the bearer token. */
export class ApiClient {
  private readonly base: string;
  private readonly opts: ApiClientOptions;

  constructor(opts: ApiClientOptions) {
    this.opts = opts;
    this.base = opts.baseUrl.replace(/\/+$/, '');
  }

  /** The task endpoints. */
  readonly tasks = {
    create: (body: CreateTaskBody): Promise<Task> => this.call<Task>('POST', '/api/tasks', body),
    list: (query: ListTasksQuery = {}): Promise<TaskList> =>
      this.call<TaskList>('GET', `/api/tasks${queryString(query)}`),
    get: (id: number): Promise<Task> => this.call<Task>('GET', `/api/tasks/${id}`),
    /** paused pauses, running resumes, cancelled cancels, pending retries. */
    changeStatus: (id: number, status: TaskStatus): Promise<Task> =>
      this.call<Task>('PUT', `/api/tasks/${id}/status`, { status }),
    delete: async (id: number): Promise<void> => {
      await this.call<null>('DELETE', `/api/tasks/${id}`);
    },
    /** The task's metrics history (GET /api/tasks/{id}/metrics). */
    metrics: (id: number): Promise<TaskMetricsView> =>
      this.call<TaskMetricsView>('GET', `/api/tasks/${id}/metrics`),
    /** A page of the task's events, newest first; the next page is `before` the last one's id. */
    events: async (id: number, page: TaskEventsQuery = {}): Promise<TaskEvent[]> =>
      (await this.call<{ items: TaskEvent[] }>('GET', `/api/tasks/${id}/events${queryString(page)}`)).items,
  };

  /** Sends raw bytes (code, archives) with `contentType`; JSON back. Throws ApiError. */
  async send<T>(method: string, path: string, bytes: Uint8Array, contentType: string): Promise<T> {
    return this.call<T>(method, path, new RawBody(bytes, contentType));
  }

  /** Any request; JSON in (or a RawBody) and out. Throws ApiError. */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined)
      headers['content-type'] = body instanceof RawBody ? body.type : 'application/json';
    const doFetch = this.opts.fetch ?? fetch;
    let res: Response;
    try {
      res = await doFetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : body instanceof RawBody ? body.bytes : JSON.stringify(body),
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 30_000),
      });
    } catch (err) {
      const cause =
        err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
      throw new ApiError(0, 'unreachable', `cannot reach ${this.base}: ${cause}`);
    }
    const text = await res.text();
    let parsed: unknown = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!res.ok) {
      const e = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)
        ?.error;
      throw new ApiError(
        res.status,
        typeof e?.code === 'string' ? e.code : `http_${res.status}`,
        typeof e?.message === 'string' ? e.message : `${method} ${path} answered ${res.status}`,
        e?.details && typeof e.details === 'object' ? (e.details as Record<string, unknown>) : undefined,
        retryAfterMs(res.headers.get('retry-after')),
      );
    }
    return parsed as T;
  }
}

/** A body sent as it is, not as JSON. */
class RawBody {
  constructor(
    readonly bytes: Uint8Array,
    readonly type: string,
  ) {}
}

/** Retry-After as seconds or an HTTP date, in ms. */
function retryAfterMs(header: string | null): number | undefined {
  if (!header) return undefined;
  const s = Number(header);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** `?k=v&...` of the defined values of `query`, or nothing. */
function queryString(query: object): string {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.set(k, String(v));
  const s = qs.toString();
  return s ? `?${s}` : '';
}
