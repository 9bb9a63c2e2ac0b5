/** Held-out evaluation of a train_mnist global model, in a worker thread (loading MNIST takes ~0.5 s). */
import { parentPort, workerData } from 'node:worker_threads';
import { evaluate } from '../../mnist/trainer.js';

if (parentPort) {
  const port = parentPort;
  evaluate((workerData as { path: string }).path).then(
    (r) => port.postMessage(r),
    (err: unknown) => port.postMessage({ ok: false, code: 'error', message: String(err) }),
  );
}
