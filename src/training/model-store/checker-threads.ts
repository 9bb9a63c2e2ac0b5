/**
 * The worker threads that hash and scan large uploads (see upload-check.ts). They are shared by
 * every upload of the process, started on the first large upload and stopped after a while
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
  { op: 'open'; init: CheckerInit } | { op: 'close' } | CheckRequest
);
/** Messages from a checker thread. */
export type ThreadReply = { id: number } & CheckReply;

interface CheckerThread {
  worker: Worker;
  uploads: Map<number, (r: CheckReply) => void>;
  idle: NodeJS.Timeout | null;
}

const threads: CheckerThread[] = [];
let nextId = 1;

function startCheckerThread(): CheckerThread {
  const worker = startThread(new URL('./upload-check.worker.js', import.meta.url));
  const t: CheckerThread = { worker, uploads: new Map(), idle: null };
  worker.unref();
  worker.on('message', (r: ThreadReply) => t.uploads.get(r.id)?.(r));
  const lost = (why: string) => {
    const i = threads.indexOf(t);
    if (i >= 0) threads.splice(i, 1);
    if (t.idle) clearTimeout(t.idle);
    for (const reply of t.uploads.values()) reply({ op: 'error', message: why });
    t.uploads.clear();
  };
  worker.on('error', (err) => lost(`the upload check thread failed: ${err.message}`));
  worker.on('exit', () => lost('the upload check thread stopped'));
  threads.push(t);
  return t;
}

/** A checker for one upload on a shared thread; replies arrive in order through `onReply`. */
export function threadChecker(
  init: CheckerInit,
  onReply: (r: CheckReply) => void,
): { send(req: CheckRequest): void; close(): void } {
  let t = threads.reduce<CheckerThread | undefined>(
    (best, x) => (best === undefined || x.uploads.size < best.uploads.size ? x : best),
    undefined,
  );
  if (!t || (t.uploads.size > 0 && threads.length < MAX_THREADS)) t = startCheckerThread();
  const thread = t;
  if (thread.idle) clearTimeout(thread.idle);
  thread.idle = null;
  const id = nextId++;
  thread.uploads.set(id, onReply);
  const post = (m: ThreadRequest) => thread.worker.postMessage(m);
  post({ id, op: 'open', init });
  return {
    send: (req) => {
      if (thread.uploads.has(id)) post({ id, ...req });
    },
    close: () => {
      if (!thread.uploads.delete(id)) return;
      post({ id, op: 'close' });
      if (thread.uploads.size === 0) {
        thread.idle = setTimeout(() => {
          // Out of the list first, so no upload picks a thread that is stopping.
          const i = threads.indexOf(thread);
          if (i >= 0) threads.splice(i, 1);
          void thread.worker.terminate();
        }, IDLE_MS);
        thread.idle.unref();
      }
    },
  };
}
