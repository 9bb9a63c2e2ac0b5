/**
 * Moving models between a worker and the server (docs/training.md): the global model is
 * downloaded with GET, an update uploaded as a resumable (tus) upload (PUT on a server without
 * tus), both with the worker's bearer token. Network errors, 5xx and 429 are retried with
 * backoff, and neither starts again from zero: a cut download continues with Range from the
 * bytes it has, a cut upload from the offset the server stored (HEAD). An upload is idempotent
 * server-side (a retry of an accepted update answers 200 duplicate).
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

/**
 * Downloads `url` to `dest` (written to a temporary name, then renamed). A retry after a cut
 * asks only for the rest (`Range: bytes=<have>-`, `If-Range: <ETag>`): a 206 is appended, a
 * 200 (the model changed, or no range support) starts the file again.
 */
export async function downloadModel(
  url: string,
  dest: string,
  opts: TransferOptions,
): Promise<TransferOutcome<{ bytes: number; resumed: number }>> {
  const target = resolveModelUrl(url, opts.serverUrl);
  const tmp = `${dest}.part`;
  await rm(tmp, { force: true });
  let etag: string | undefined;
  let resumed = 0;
  try {
    return await withRetries(`download ${target.pathname}`, opts, async (signal) => {
      const have = etag ? ((await stat(tmp).catch(() => null))?.size ?? 0) : 0;
      const headers = authHeaders(opts.token);
      if (have > 0 && etag) Object.assign(headers, { range: `bytes=${have}-`, 'if-range': etag });
      const res = await send(target, 'GET', headers, signal);
      if (!ok(res)) return refusal(res, await readText(res));
      const partial = res.statusCode === 206;
      if (partial) resumed++;
      etag = typeof res.headers.etag === 'string' ? res.headers.etag : undefined;
      await pipeline(res, createWriteStream(tmp, { flags: partial ? 'a' : 'w' }));
      await rename(tmp, dest);
      return { ok: true, bytes: (await stat(dest)).size, resumed };
    });
  } finally {
    await rm(tmp, { force: true });
  }
}

/** What tus requests carry besides their own headers. */
const TUS = { 'tus-resumable': '1.0.0' };
/** tus answers that mean "ask where the upload is and go on": a lock or an offset moved on. */
const TUS_AGAIN = new Set(['offset_mismatch', 'upload_locked']);

/**
 * Uploads an update as a resumable (tus) upload, streamed from its file: created once, then
 * PATCHed from the offset the server has (HEAD after a cut), so a cut connection costs only
 * what was in flight. An upload the server no longer has (404, 410) is created again. A server
 * without tus (POST answered 404 or 405) gets a PUT.
 */
export async function uploadUpdate(
  req: UploadRequest,
  opts: TransferOptions,
): Promise<TransferOutcome<{ status: number; body: Record<string, unknown>; resumed: number }>> {
  const target = resolveModelUrl(req.uploadUrl, opts.serverUrl);
  target.searchParams.set('attempt', String(req.attempt));
  target.searchParams.set('num_samples', String(req.numSamples));
  const size = (await stat(req.file)).size;
  const retryOpts = { ...opts, maxAttempts: opts.maxAttempts ?? 20 };
  const common: Record<string, string> = { ...authHeaders(opts.token), ...TUS };
  if (req.clientId) common['x-ai-farm-client'] = req.clientId;
  let location: URL | null = null;
  let resumed = 0;
  let plain = false;
  const out = await withRetries(`upload ${target.pathname}`, retryOpts, async (signal) => {
    let offset = 0;
    if (!location) {
      const headers = { ...common, 'upload-length': String(size) };
      if (req.metrics) Object.assign(headers, { 'x-ai-farm-metrics': JSON.stringify(req.metrics) });
      const res = await send(target, 'POST', headers, signal);
      const text = await readText(res);
      if (res.statusCode === 404 || res.statusCode === 405) {
        plain = true;
        return { ok: false, status: 0, code: 'no_tus', message: 'no tus', retryable: false };
      }
      if (res.statusCode === 200) return { ok: true, status: 200, body: jsonObject(text), resumed };
      if (res.statusCode !== 201 || typeof res.headers.location !== 'string')
        return transient(refusal(res, text));
      location = new URL(res.headers.location, target);
    } else {
      const res = await send(location, 'HEAD', common, signal);
      await readText(res);
      if (res.statusCode === 404 || res.statusCode === 410) {
        location = null;
        return { ok: false, status: 0, code: 'upload_gone', message: 'the upload expired', retryable: true };
      }
      if (!ok(res)) return transient(refusal(res, ''));
      offset = Number(res.headers['upload-offset']);
      resumed++;
    }
    const headers = {
      ...common,
      'content-type': 'application/offset+octet-stream',
      'upload-offset': String(offset),
      'content-length': String(size - offset),
    };
    const res = await send(location, 'PATCH', headers, signal, req.file, offset);
    const text = await readText(res);
    if (res.statusCode === 204 && Number(res.headers['upload-offset']) === size) {
      const digest = res.headers['x-ai-farm-digest'];
      return { ok: true, status: 201, body: { accepted: true, digest, bytes: size }, resumed };
    }
    if (res.statusCode === 204) {
      const message = `the server has ${String(res.headers['upload-offset'])} of ${size} bytes`;
      return { ok: false, status: 0, code: 'incomplete', message, retryable: true };
    }
    const r = refusal(res, text);
    if (r.ok) return r;
    if (r.status === 404 || r.status === 410) location = null;
    return r.status === 404 || r.status === 410 || TUS_AGAIN.has(r.code)
      ? { ...r, retryable: true }
      : transient(r);
  });
  if (!plain) return out;
  const put = await putUpdate(req, opts);
  return put.ok ? { ...put, resumed: 0 } : put;
}

/** 409s that pass (TRANSIENT_CONFLICTS) made retryable. */
function transient<T>(r: TransferOutcome<T>): TransferOutcome<T> {
  return !r.ok && r.status === 409 && TRANSIENT_CONFLICTS.has(r.code) ? { ...r, retryable: true } : r;
}

function jsonObject(text: string): Record<string, unknown> {
  try {
    const v = text ? (JSON.parse(text) as unknown) : null;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Uploads an update with one PUT, streamed from its file (a server without tus). */
export async function putUpdate(
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
  method: 'GET' | 'PUT' | 'POST' | 'HEAD' | 'PATCH',
  headers: Record<string, string>,
  signal: AbortSignal,
  file?: string,
  from = 0,
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
    pipeline(createReadStream(file, { highWaterMark: 1 << 20, start: from }), req).catch(() => undefined);
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
