/**
 * Moving models between a worker and the server (docs/training.md): the global model is
 * downloaded with GET, an update uploaded with PUT, both with the worker's bearer token.
 * Network errors, 5xx and 429 are retried with backoff: a download is harmless to repeat and
 * an upload is idempotent server-side (a retry of an accepted update answers 200 duplicate).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { pipeline } from 'node:stream/promises';
import { Backoff, type BackoffOptions } from '../backoff.js';

/** How transfers authenticate and retry. */
export interface TransferOptions {
  /** Base URL the model URLs are relative to (the HTTP API). */
  serverUrl: string;
  token?: string | undefined;
  /** Ends the transfer (and its retries) early. */
  signal?: AbortSignal | undefined;
  /** Attempts before giving up on network errors and 5xx. Default 8 (downloads), 20 (uploads). */
  maxAttempts?: number;
  /** Delays between attempts. Default 250 ms doubling to 5 s. */
  backoff?: BackoffOptions;
  /** Per-attempt timeout, ms. Default 120 000. */
  timeoutMs?: number;
  /** Told about each retry (for the worker's log). */
  onRetry?: (what: string, attempt: number, delayMs: number) => void;
}

/** A transfer's outcome; only an abort makes these functions reject. */
export type TransferOutcome<T> =
  ({ ok: true } & T) | { ok: false; status: number; code: string; message: string; retryable: boolean };

/** The update an upload carries. */
export interface UploadRequest {
  uploadUrl: string;
  file: string;
  attempt: number;
  numSamples: number;
  clientId?: string | undefined;
  metrics?: Record<string, number> | undefined;
}

/**
 * 409s that pass: right after a reconnection the upload can beat the WebSocket's new
 * registration (client_not_connected) or the lease's return (stale_attempt), and a retry can
 * meet its own broken first try still streaming (upload_in_progress). A truly stale lease ends
 * the task's execution (the server sends stop or a new attempt), which aborts the retries.
 */
const TRANSIENT_CONFLICTS = new Set(['client_not_connected', 'stale_attempt', 'upload_in_progress']);

/** Resolves a model URL from the server (absolute or relative to the API). */
export function resolveModelUrl(url: string, serverUrl: string): URL {
  return new URL(url, serverUrl.endsWith('/') ? serverUrl : `${serverUrl}/`);
}

/** Downloads `url` to `dest` (written to a temporary name, then renamed). */
export async function downloadModel(
  url: string,
  dest: string,
  opts: TransferOptions,
): Promise<TransferOutcome<{ bytes: number }>> {
  const target = resolveModelUrl(url, opts.serverUrl);
  return withRetries(`download ${target.pathname}`, opts, async (signal) => {
    const res = await send(target, 'GET', authHeaders(opts.token), signal);
    if (!ok(res)) return refusal(res, await readText(res));
    const tmp = `${dest}.part`;
    try {
      await pipeline(res, createWriteStream(tmp));
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return { ok: true, bytes: (await stat(dest)).size };
  });
}

/** Uploads an update with PUT, streamed from its file. */
export async function uploadUpdate(
  req: UploadRequest,
  opts: TransferOptions,
): Promise<TransferOutcome<{ status: number; body: Record<string, unknown> }>> {
  const target = resolveModelUrl(req.uploadUrl, opts.serverUrl);
  target.searchParams.set('attempt', String(req.attempt));
  target.searchParams.set('num_samples', String(req.numSamples));
  const size = (await stat(req.file)).size;
  const retryOpts = { ...opts, maxAttempts: opts.maxAttempts ?? 20 };
  return withRetries(`upload ${target.pathname}`, retryOpts, async (signal) => {
    const headers: Record<string, string> = {
      ...authHeaders(opts.token),
      'content-type': 'application/octet-stream',
      'content-length': String(size),
    };
    if (req.clientId) headers['x-ai-farm-client'] = req.clientId;
    if (req.metrics) headers['x-ai-farm-metrics'] = JSON.stringify(req.metrics);
    const res = await send(target, 'PUT', headers, signal, req.file);
    const text = await readText(res);
    if (!ok(res)) {
      const r = refusal(res, text);
      return !r.ok && r.status === 409 && TRANSIENT_CONFLICTS.has(r.code) ? { ...r, retryable: true } : r;
    }
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: the status says enough.
    }
    const bodyObj = parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
    return { ok: true, status: res.statusCode ?? 0, body: bodyObj };
  });
}

function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * One request with node:http(s), the body piped from `file` (measured 2-3x the throughput of
 * fetch with a web stream). Resolves with the response as soon as it starts: a server may
 * answer (a refusal) before it has read the whole body.
 */
function send(
  url: URL,
  method: 'GET' | 'PUT',
  headers: Record<string, string>,
  signal: AbortSignal,
  file?: string,
): Promise<IncomingMessage> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, signal }, resolve);
    req.on('error', reject);
    if (file === undefined) {
      req.end();
      return;
    }
    // A body cut short (the server answered early, or the connection broke) is the request's
    // error, reported above.
    pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), req).catch(() => undefined);
  });
}

const ok = (res: IncomingMessage) => (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;

async function readText(res: IncomingMessage): Promise<string> {
  let text = '';
  res.setEncoding('utf8');
  try {
    for await (const chunk of res) if (text.length < 65536) text += chunk as string;
  } catch {
    // A connection cut mid-answer: what was read is all there is.
  }
  return text;
}

/** A non-2xx answer as an outcome, with the server's `{error: {code, message}}` when it sent one. */
function refusal(res: IncomingMessage, text: string): TransferOutcome<never> {
  const status = res.statusCode ?? 0;
  let code = `http_${status}`;
  let message = text.slice(0, 500) || `${status} ${res.statusMessage ?? ''}`.trim();
  try {
    const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
    if (typeof e?.code === 'string') code = e.code;
    if (typeof e?.message === 'string') message = e.message;
  } catch {
    // Not JSON.
  }
  const retryable = status >= 500 || status === 429 || status === 408;
  return { ok: false, status, code, message, retryable };
}

/**
 * Runs `attempt` until it succeeds, is refused for good, or attempts run out. A thrown error
 * (connection refused or reset, timeout) counts as retryable; an abort of `opts.signal` rejects.
 */
async function withRetries<T>(
  what: string,
  opts: TransferOptions,
  attempt: (signal: AbortSignal) => Promise<TransferOutcome<T>>,
): Promise<TransferOutcome<T>> {
  const backoff = new Backoff({ initialMs: 250, maxMs: 5000, ...opts.backoff });
  const max = opts.maxAttempts ?? 8;
  for (let n = 1; ; n++) {
    opts.signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? 120_000);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    let outcome: TransferOutcome<T>;
    try {
      outcome = await attempt(signal);
    } catch (err) {
      opts.signal?.throwIfAborted();
      const cause = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : '';
      outcome = { ok: false, status: 0, code: 'unreachable', message: `${what}: ${cause}`, retryable: true };
    }
    if (outcome.ok || !outcome.retryable || n >= max) return outcome;
    const delay = backoff.next();
    opts.onRetry?.(`${what}: ${outcome.message}`, n, delay);
    await sleep(delay, opts.signal);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(timer);
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
