/**
 * The worker threads that check and write large uploads (see upload-check.ts). They are shared
 * by every upload of the process, started on the first large upload and stopped after a while
 * without one, so a round of uploads pays the start of a thread once, not once per upload. A
 * thread never holds the process open (unref). Each upload has its own id on the thread.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../threads.js';
import type { CheckerInit, CheckReply, CheckRequest } from './upload-check.js';

/** A thread with no upload for this long exits. */
const IDLE_MS = 30_000;
/** Threads at most: the receiving thread keeps a core. */
const MAX_THREADS = Math.max(1, Math.min(4, availableParallelism() - 1));

/** Messages to a checker thread. */
export type ThreadRequest = { id: number } & (
  | { op: 'open'; init: CheckerInit; path: string }
  /** Stop: answered by `closed` once the upload's writes have settled and its file is closed. */
  | { op: 'close' }
  | CheckRequest
);
/** Messages from a checker thread. */
export type ThreadReply = { id: number } & (CheckReply | { op: 'closed' });

interface Upload {
  onReply: (r: CheckReply) => void;
  /** Set while closing: called on `closed`, or when the thread is lost. */
  closed: (() => void) | null;
}

interface CheckerThread {
  worker: Worker;
  uploads: Map<number, Upload>;
  idle: NodeJS.Timeout | null;
}

const threads: CheckerThread[] = [];
let nextId = 1;

function startCheckerThread(): CheckerThread {
  const worker = startThread(new URL('./upload-check.worker.js', import.meta.url));
  const t: CheckerThread = { worker, uploads: new Map(), idle: null };
  worker.unref();
  worker.on('message', (r: ThreadReply) => {
    const u = t.uploads.get(r.id);
    if (!u) return;
    if (r.op === 'closed') u.closed?.();
    else if (!u.closed) u.onReply(r);
  });
  const lost = (why: string) => {
    const i = threads.indexOf(t);
    if (i >= 0) threads.splice(i, 1);
    if (t.idle) clearTimeout(t.idle);
    for (const u of t.uploads.values()) {
      if (u.closed) u.closed();
      else u.onReply({ op: 'error', message: why });
    }
  };
  worker.on('error', (err) => lost(`the upload check thread failed: ${err.message}`));
  worker.on('exit', () => lost('the upload check thread stopped'));
  threads.push(t);
  return t;
}

/** Buffers that can move to the thread without a copy: each chunk's own, whole, ordinary buffer. */
function movable(chunks: Uint8Array[]): { chunks: Uint8Array[]; transfer: ArrayBuffer[] } {
  const transfer: ArrayBuffer[] = [];
  const out = chunks.map((c) => {
    const b = c.buffer;
    if (
      b instanceof ArrayBuffer &&
      c.byteOffset === 0 &&
      c.byteLength === b.byteLength &&
      !transfer.includes(b)
    ) {
      transfer.push(b);
      return c;
    }
    // A view into a larger buffer (a pool's, a header's): moving it would take the rest along.
    const own = new Uint8Array(c);
    transfer.push(own.buffer);
    return own;
  });
  return { chunks: out, transfer };
}

/**
 * A checker for one upload on a shared thread; replies arrive in order through `onReply`. The
 * thread writes the file at `path` itself. Chunks sent are moved to the thread: the sender
 * must not use them afterwards (their buffers are detached).
 */
export function threadChecker(
  init: CheckerInit,
  path: string,
  onReply: (r: CheckReply) => void,
): { send(req: CheckRequest): void; close(): Promise<void> } {
  let t = threads.reduce<CheckerThread | undefined>(
    (best, x) => (best === undefined || x.uploads.size < best.uploads.size ? x : best),
    undefined,
  );
  if (!t || (t.uploads.size > 0 && threads.length < MAX_THREADS)) t = startCheckerThread();
  const thread = t;
  if (thread.idle) clearTimeout(thread.idle);
  thread.idle = null;
  const id = nextId++;
  const upload: Upload = { onReply, closed: null };
  thread.uploads.set(id, upload);
  thread.worker.postMessage({ id, op: 'open', init, path } satisfies ThreadRequest);
  let closing: Promise<void> | null = null;
  return {
    send: (req) => {
      if (upload.closed || !threads.includes(thread)) return;
      if (req.op === 'chunks') {
        const m = movable(req.chunks);
        thread.worker.postMessage({ id, op: 'chunks', chunks: m.chunks } satisfies ThreadRequest, m.transfer);
      } else thread.worker.postMessage({ id, ...req } satisfies ThreadRequest);
    },
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        upload.closed = resolve;
        if (!threads.includes(thread)) return resolve();
        thread.worker.postMessage({ id, op: 'close' } satisfies ThreadRequest);
      }).then(() => {
        thread.uploads.delete(id);
        if (thread.uploads.size > 0 || !threads.includes(thread)) return;
        thread.idle = setTimeout(() => {
          // Out of the list first, so no upload picks a thread that is stopping.
          const i = threads.indexOf(thread);
          if (i >= 0) threads.splice(i, 1);
          void thread.worker.terminate();
        }, IDLE_MS);
        thread.idle.unref();
      })),
  };
}
