import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskData } from '../../api/protocol.js';
import { evaluate } from '../../mnist/index.js';
import { mnistTrainOptions } from './train-mnist.js';
import { MnistThread } from './train-mnist-thread.js';
import { shardOf, trainingStateOf } from './training-loop.js';
import { sleep } from '../../../test/helpers/wait.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'train-mnist-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function task(config: Record<string, unknown>, extra: Partial<TaskData> = {}): TaskData {
  return {
    id: 7,
    type: 'train_mnist',
    name: null,
    config,
    requirements: {},
    attempt: 1,
    rank: 1,
    world_size: 3,
    ...extra,
  };
}

describe('train_mnist config', () => {
  it('reads shards, FedProx mu and the trainer options, and names a bad field', () => {
    expect(mnistTrainOptions(task({ rounds: 2, epochs: 2, batch_size: 16, seed: 3 }))).toEqual({
      epochs: 2,
      batchSize: 16,
      seed: 3,
      hidden: 128,
      optimizer: 'sgd',
      shard: { rank: 1, worldSize: 3 },
    });
    const prox = mnistTrainOptions(
      task({
        rounds: 1,
        aggregation: { strategy: 'fedprox', mu: 0.1 },
        shards: [
          [0, 0.2],
          [0.2, 0.9],
          [0.9, 1],
        ],
      }),
    );
    expect(prox).toMatchObject({ mu: 0.1, shard: { start: 0.2, end: 0.9 } });
    expect(mnistTrainOptions(task({ rounds: 1, epochs: 0 }))).toMatch(/config.epochs/);
    expect(mnistTrainOptions(task({ rounds: 1, optimizer: 'lbfgs' }))).toMatch(/config.optimizer/);
    expect(shardOf(task({ shards: [[0, 1]] }))).toMatch(/rank 1/);
  });

  it('needs data.training with the fields of docs/training.md', () => {
    expect(trainingStateOf(task({ rounds: 2 }))).toMatch(/no data.training/);
    const training = { round: 1, rounds: 2, global_model_url: null, upload_url: '/u', deadline_at: 'x' };
    expect(trainingStateOf({ ...task({ rounds: 2 }), training } as TaskData)).toEqual(training);
    const bad = { ...training, upload_url: 5 };
    expect(trainingStateOf({ ...task({ rounds: 2 }), training: bad } as unknown as TaskData)).toMatch(
      /upload_url/,
    );
  });
});

describe('MnistThread', () => {
  it('trains in a thread; a pause holds it mid-epoch, resume finishes the round', async () => {
    const thread = new MnistThread();
    try {
      const progress: number[] = [];
      let paused = false;
      const out = join(dir, 'paused.st');
      const running = thread.train(
        { outPath: out, epochs: 1, batchSize: 16, seed: 1, shard: { start: 0, end: 0.1 } },
        (p) => {
          progress.push(p.batch);
          if (!paused) {
            paused = true;
            thread.pause();
          }
        },
      );
      // The data loads first (about half a second), then the first batch pauses it.
      const deadline = Date.now() + 20_000;
      while (!paused && Date.now() < deadline) await sleep(20);
      await sleep(100);
      const seen = progress.length;
      await sleep(600);
      expect(progress.length).toBe(seen);
      expect(seen).toBeLessThan(5);
      thread.resume();
      const outcome = await running;
      expect(outcome).toMatchObject({ ok: true, numSamples: 800 });
      expect(progress.at(-1)).toBe(49);
      const ev = await evaluate(out);
      expect(ev.ok && ev.accuracy).toBeGreaterThan(0.5);
    } finally {
      await thread.close();
    }
  });

  it('abort ends a paused round; the thread then trains the next one', async () => {
    const thread = new MnistThread();
    try {
      thread.pause();
      const first = thread.train({ outPath: join(dir, 'a.st'), epochs: 1, batchSize: 8 }, () => undefined);
      await sleep(200);
      thread.abort();
      expect(await first).toMatchObject({ ok: false, code: 'aborted' });
      thread.resume();
      const second = await thread.train(
        { outPath: join(dir, 'b.st'), epochs: 1, batchSize: 32, shard: { rank: 9, worldSize: 10 } },
        () => undefined,
      );
      expect(second).toMatchObject({ ok: true, numSamples: 800 });
    } finally {
      await thread.close();
    }
  });
});
