/**
 * Worker-thread entry for aggregation. Two modes, chosen by workerData:
 * - `job`: run one aggregation, post its outcome, exit;
 * - `session`: hold a FedAvg accumulator whose sum lives in a SharedArrayBuffer owned by the
 *   parent, and answer `add` / `finish` requests until terminated.
 * Unexpected errors travel back as messages so the parent can reject the matching promise.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { runAggregation } from './aggregate-job.js';
import { createAccumulator, type FedAvgAccumulator } from './fedavg.js';
import type { SessionRequest, WorkerData, WorkerReply } from './worker-protocol.js';

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

function runSession(port: MessagePort, data: Extract<WorkerData, { mode: 'session' }>): void {
  const made = createAccumulator(data.header, data.options);
  // The parent built the same layout before starting us, so this cannot fail in practice.
  if (!made.ok) throw new Error(made.message);
  const acc: FedAvgAccumulator = made.accumulator;
  port.on('message', (req: SessionRequest) => {
    const t0 = performance.now();
    const work =
      req.op === 'add'
        ? acc.add(req.path, req.weight, req.verified === true ? { verified: true } : {})
        : acc
            .finish(req.outPath, req.metadata)
            .then((r) => ({ ...r, bytesRead: acc.bytesRead, ms: performance.now() - t0 }));
    work.then(
      (value) => port.postMessage({ id: req.id, ok: true, value } satisfies WorkerReply),
      (err: unknown) =>
        port.postMessage({ id: req.id, ok: false, error: errorOf(err) } satisfies WorkerReply),
    );
  });
}

if (parentPort) {
  const data = workerData as WorkerData;
  if (data.mode === 'job') void runJob(parentPort, data);
  else runSession(parentPort, data);
}
