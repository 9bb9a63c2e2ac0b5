/**
 * Worker-thread entry for aggregation. Two modes, chosen by workerData:
 * - `job`: run one aggregation, post its outcome, exit;
 * - `slice`: one thread of a parallel FedAvg session (fedavg-session.ts): add its slice of each
 *   update to a sum shared with the other threads, and answer `scan` / `add` / `finishPart`
 *   requests in the order they come until terminated.
 * - `robust`: one thread of a parallel robust aggregation (robust-parallel.ts): answer `chunk` and
 *   `distances` requests over the updates it opened.
 * Unexpected errors travel back as messages so the parent can reject the matching promise.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { runAggregation } from './aggregate-job.js';
import { createSlice, type FedAvgSlice } from './fedavg-slice.js';
import { openRobustSlice } from './robust-slice.js';
import type { RobustCall, SliceRequest, WorkerData, WorkerReply } from './worker-protocol.js';

function errorOf(err: unknown): { message: string; stack?: string } {
  return err instanceof Error
    ? { message: err.message, ...(err.stack ? { stack: err.stack } : {}) }
    : { message: String(err) };
}

async function runJob(port: MessagePort, data: Extract<WorkerData, { mode: 'job' }>): Promise<void> {
  try {
    const value = await runAggregation(data.job);
    port.postMessage({ id: 0, ok: true, value } satisfies WorkerReply);
  } catch (err) {
    port.postMessage({ id: 0, ok: false, error: errorOf(err) } satisfies WorkerReply);
  }
}

function runSlice(port: MessagePort, data: Extract<WorkerData, { mode: 'slice' }>): void {
  const made = createSlice(data.setup);
  // The parent built the same layout before starting us, so this cannot fail in practice.
  if (!made.ok) throw new Error(made.message);
  const slice: FedAvgSlice = made.slice;
  // Modules loaded and kernels compiled: the session's ready() resolves on this.
  port.postMessage({ id: 0, ok: true, value: 'ready' } satisfies WorkerReply);
  // One request at a time, in order: a scan must finish before the add of the same file.
  let queue: Promise<unknown> = Promise.resolve();
  port.on('message', (req: SliceRequest) => {
    const work = (): Promise<unknown> =>
      req.op === 'scan'
        ? slice.scan(req.path)
        : req.op === 'add'
          ? slice.add(req.path, req.weight)
          : Promise.resolve(slice.finishPart(req.tmpPath, req.out, req.part, req.totalWeight));
    queue = queue.then(work).then(
      (value) => port.postMessage({ id: req.id, ok: true, value } satisfies WorkerReply),
      (err: unknown) =>
        port.postMessage({ id: req.id, ok: false, error: errorOf(err) } satisfies WorkerReply),
    );
  });
}

function runRobustSlice(port: MessagePort, data: Extract<WorkerData, { mode: 'robust' }>): void {
  const opened = openRobustSlice(data.setup);
  // Requests wait for the files to be open, then run one at a time.
  let queue: Promise<unknown> = opened;
  port.on('message', (req: RobustCall & { id: number }) => {
    const work = async (): Promise<unknown> => {
      const slice = await opened;
      return req.op === 'chunk' ? slice.chunk(req) : slice.distances();
    };
    queue = queue.then(work, work).then(
      (value) => port.postMessage({ id: req.id, ok: true, value } satisfies WorkerReply),
      (err: unknown) =>
        port.postMessage({ id: req.id, ok: false, error: errorOf(err) } satisfies WorkerReply),
    );
  });
}

if (parentPort) {
  const data = workerData as WorkerData;
  if (data.mode === 'job') void runJob(parentPort, data);
  else if (data.mode === 'slice') runSlice(parentPort, data);
  else runRobustSlice(parentPort, data);
}
