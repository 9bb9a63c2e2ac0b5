/**
 * The main side of the `train_mnist` training thread: starts train-mnist.worker (compiled
 * .js from dist/, or the .ts source through tsx's hooks under vitest), runs rounds in it,
 * and pauses, resumes or aborts them through a shared control word.
 */
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../threads.js';
import type { TrainOptions, TrainOutcome, TrainProgress } from '../../mnist/index.js';

/** Slots of the shared control word (Int32). */
export const CONTROL = { paused: 0, abort: 1 } as const;

/** One round's training, as sent to the thread (everything but the data and callbacks). */
export type ThreadTrainOptions = Omit<TrainOptions, 'data' | 'onProgress'>;

export interface ThreadRequest {
  id: number;
  options: ThreadTrainOptions;
}

export type ThreadReply =
  | { id: number; kind: 'progress'; progress: TrainProgress }
  | { id: number; kind: 'done'; outcome: TrainOutcome }
  | { id: number; kind: 'aborted' }
  | { id: number; kind: 'error'; message: string };

/** How a round in the thread ended. */
export type ThreadOutcome = TrainOutcome | { ok: false; code: 'aborted' | 'thread_failed'; message: string };

/** A training thread, started on first use and kept for the task's rounds (the data loads once). */
export class MnistThread {
  private worker: Worker | undefined;
  private readonly control = new Int32Array(new SharedArrayBuffer(8));
  private seq = 0;
  private running:
    { id: number; onProgress: (p: TrainProgress) => void; settle: (o: ThreadOutcome) => void } | undefined;

  /** Trains one round; resolves with the trainer's outcome, `aborted` after abort(). */
  train(options: ThreadTrainOptions, onProgress: (p: TrainProgress) => void): Promise<ThreadOutcome> {
    if (this.running) return Promise.reject(new Error('a round is already training'));
    Atomics.store(this.control, CONTROL.abort, 0);
    const worker = this.start();
    const id = ++this.seq;
    return new Promise<ThreadOutcome>((resolve) => {
      this.running = {
        id,
        onProgress,
        settle: (o) => {
          this.running = undefined;
          resolve(o);
        },
      };
      worker.postMessage({ id, options } satisfies ThreadRequest);
    });
  }

  pause(): void {
    Atomics.store(this.control, CONTROL.paused, 1);
  }

  resume(): void {
    Atomics.store(this.control, CONTROL.paused, 0);
    Atomics.notify(this.control, CONTROL.paused);
  }

  /** Ends the round in progress at its next mini-batch (even while paused). */
  abort(): void {
    Atomics.store(this.control, CONTROL.abort, 1);
    Atomics.notify(this.control, CONTROL.paused);
  }

  async close(): Promise<void> {
    this.abort();
    const w = this.worker;
    this.worker = undefined;
    this.running?.settle({ ok: false, code: 'aborted', message: 'closed' });
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = startThread(new URL('./train-mnist.worker.js', import.meta.url), {
      workerData: { control: this.control.buffer },
    });
    w.on('message', (r: ThreadReply) => {
      const run = this.running;
      if (!run || r.id !== run.id) return;
      if (r.kind === 'progress') run.onProgress(r.progress);
      else if (r.kind === 'done') run.settle(r.outcome);
      else if (r.kind === 'aborted') run.settle({ ok: false, code: 'aborted', message: 'aborted' });
      else run.settle({ ok: false, code: 'thread_failed', message: r.message });
    });
    const fail = (message: string) => {
      if (this.worker === w) this.worker = undefined;
      this.running?.settle({ ok: false, code: 'thread_failed', message });
    };
    w.on('error', (err) => fail(`training thread failed: ${err.stack ?? err.message}`));
    w.on('exit', (code) => fail(`training thread exited with code ${code}`));
    this.worker = w;
    return w;
  }
}
