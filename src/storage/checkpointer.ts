import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/**
 * SQLite's WAL is written back into the database file by a checkpoint, which ends with an
 * fsync of both files. Left to SQLite (`wal_autocheckpoint`), the connection that commits
 * runs it inside that commit: on the event loop, every 1000 pages, for as long as the disk
 * takes to sync (0.2-1 s on a busy machine, measured by bench/capacity.ts). Instead a
 * worker thread with its own connection runs a PASSIVE checkpoint every CHECKPOINT_MS:
 * PASSIVE never blocks the writer, and once everything is copied back the writer starts the
 * WAL over from the beginning by itself. The main connection keeps an automatic checkpoint
 * with a high threshold (FALLBACK_AUTOCHECKPOINT_PAGES) as a safety net for write loads so
 * steady that the worker never finds the WAL complete; what it then has left to copy is
 * the little written since the worker's last pass.
 */

/** How often the worker thread checkpoints, ms. A pass with nothing to copy costs nothing. */
export const CHECKPOINT_MS = 1000;
/** The main connection's own automatic checkpoint while the worker runs, in pages. */
export const FALLBACK_AUTOCHECKPOINT_PAGES = 10_000;
/** SQLite's default, restored if the worker thread stops. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

/** Runs in the worker thread (CommonJS: eval'd code). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 0');
const pass = () => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (err) {
    // SQLITE_BUSY: another checkpoint is running; the next pass catches up.
    if (!err || err.code !== 'SQLITE_BUSY') throw err;
  }
};
const timer = setInterval(pass, workerData.everyMs);
parentPort.on('message', () => {
  clearInterval(timer);
  try { pass(); } finally { db.close(); parentPort.close(); }
});
`;

export interface Checkpointer {
  /** Stops the thread after a last pass; resolves when it has exited. */
  stop(): Promise<void>;
}

/**
 * Starts checkpointing `file` from a worker thread and lowers the main connection's own
 * automatic checkpoint to a safety net. If the thread fails, the main connection's
 * default is restored and `onError` hears why; the database keeps working either way.
 */
export function startCheckpointer(
  file: string,
  setAutocheckpoint: (pages: number) => void,
  onError: (err: unknown) => void = () => undefined,
): Checkpointer {
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { file, module, everyMs: CHECKPOINT_MS },
    // A small thread: one connection and a timer.
    resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
  });
  worker.unref();
  setAutocheckpoint(FALLBACK_AUTOCHECKPOINT_PAGES);
  let stopping = false;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const fallBack = (err: unknown) => {
    if (stopping) return;
    stopping = true;
    try {
      setAutocheckpoint(DEFAULT_AUTOCHECKPOINT_PAGES);
    } catch {
      // The main connection is closed already.
    }
    onError(err);
  };
  worker.once('error', fallBack);
  worker.once('exit', (code) => fallBack(new Error(`the checkpoint thread exited (code ${code})`)));
  return {
    async stop() {
      if (stopping) return exited;
      stopping = true;
      worker.postMessage('stop');
      const timer = setTimeout(() => void worker.terminate(), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
