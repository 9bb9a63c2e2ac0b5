/**
 * The thread a `train_mnist` task trains in (see train-mnist.ts). It loads the digits once
 * and runs one {@link train} per round it is asked for. Before each mini-batch it looks at
 * the shared control word: paused, it blocks right there (Atomics.wait: only this thread
 * sleeps, the worker's event loop carries on); aborted, it ends the round.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadMnist, train, type MnistData, type TrainOptions } from '../../mnist/index.js';
import { CONTROL, type ThreadReply, type ThreadRequest } from './train-mnist-thread.js';

const control = new Int32Array((workerData as { control: SharedArrayBuffer }).control);
let data: Promise<MnistData> | undefined;

class Aborted extends Error {}

/** Holds while paused; throws when the round is aborted. */
function gate(): void {
  for (;;) {
    if (Atomics.load(control, CONTROL.abort) !== 0) throw new Aborted('aborted');
    if (Atomics.load(control, CONTROL.paused) === 0) return;
    Atomics.wait(control, CONTROL.paused, 1, 1000);
  }
}

const port = parentPort;
port?.on('message', (req: ThreadRequest) => {
  void (async () => {
    const reply = (r: ThreadReply) => port.postMessage(r);
    try {
      data ??= loadMnist();
      const options: TrainOptions = {
        ...req.options,
        data: await data,
        onProgress: (p) => {
          gate();
          reply({ id: req.id, kind: 'progress', progress: p });
        },
      };
      gate();
      reply({ id: req.id, kind: 'done', outcome: await train(options) });
    } catch (err) {
      if (err instanceof Aborted) reply({ id: req.id, kind: 'aborted' });
      else
        reply({
          id: req.id,
          kind: 'error',
          message: err instanceof Error ? (err.stack ?? err.message) : String(err),
        });
    }
  })();
});
