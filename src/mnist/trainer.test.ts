import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccumulator } from '../training/aggregation/fedavg.js';
import { writeSafetensorsFile } from '../training/safetensors/encode.js';
import { readHeaderFile, readTensorsF32 } from '../training/safetensors/read.js';
import { initParams, mlpLayout } from './mlp.js';
import { HELD_OUT, loadMnist, splitRange, type MnistData } from './mnist-data.js';
import { evaluate, loadWeights, saveWeights, train, type TrainProgress } from './trainer.js';

let dir: string;
let data: MnistData;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'trainer-'));
  data = await loadMnist();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('MNIST data', () => {
  it('has a fixed split and disjoint shards', async () => {
    expect(data.count).toBe(10000);
    expect(data.count - data.trainCount).toBe(HELD_OUT);
    const again = await loadMnist();
    expect(again.labels).toEqual(data.labels);
    const shards = [0, 1, 2].map((rank) => splitRange(data, { rank, worldSize: 3 }));
    expect(shards).toEqual([
      { from: 0, to: 2666 },
      { from: 2666, to: 5333 },
      { from: 5333, to: 8000 },
    ]);
    expect(splitRange(data, { start: 0.5, end: 1 })).toEqual({ from: 4000, to: 8000 });
    expect(() => splitRange(data, { rank: 3, worldSize: 3 })).toThrow(RangeError);
  });
});

describe('trainer', () => {
  it('lowers the loss in one epoch and reports progress', async () => {
    const init = join(dir, 'init.st');
    const layout = mlpLayout(64);
    await saveWeights(init, layout, initParams(64, 7));
    const before = await evaluate(init, 'heldout', data);
    const progress: TrainProgress[] = [];
    const out = join(dir, 'one-epoch.st');
    const r = await train({
      weightsPath: init,
      outPath: out,
      epochs: 1,
      batchSize: 50,
      shard: { rank: 0, worldSize: 4 },
      data,
      onProgress: (p) => progress.push(p),
    });
    expect(r).toMatchObject({ ok: true, numSamples: 2000 });
    expect(progress.length).toBe(40);
    expect(progress.at(-1)).toMatchObject({ epoch: 0, batch: 39, totalBatches: 40 });
    const after = await evaluate(out, 'heldout', data);
    expect(before.ok && after.ok).toBe(true);
    if (!before.ok || !after.ok) return;
    expect(after.loss).toBeLessThan(before.loss * 0.5);
    expect(after.accuracy).toBeGreaterThan(0.8);
    // PyTorch names, shapes and F32.
    const h = await readHeaderFile(out);
    expect(h.ok && h.header.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      ['fc1.weight', 'F32', [64, 784]],
      ['fc1.bias', 'F32', [64]],
      ['fc2.weight', 'F32', [10, 64]],
      ['fc2.bias', 'F32', [10]],
    ]);
  });

  it('pulls towards the global weights with FedProx mu', async () => {
    const init = join(dir, 'prox-init.st');
    await saveWeights(init, mlpLayout(32), initParams(32, 3));
    const distance = async (mu: number): Promise<number> => {
      const out = join(dir, `prox-${mu}.st`);
      const r = await train({
        weightsPath: init,
        outPath: out,
        epochs: 1,
        batchSize: 32,
        mu,
        data,
        shard: { start: 0, end: 0.1 },
      });
      if (!r.ok) throw new Error(r.message);
      const a = await loadWeights(init);
      const b = await loadWeights(out);
      if (!a.ok || !b.ok) throw new Error('weights');
      return Math.sqrt(a.params.reduce((s, x, i) => s + (x - b.params[i]!) ** 2, 0));
    };
    expect(await distance(1)).toBeLessThan(0.9 * (await distance(0)));
  });

  it('refuses weights of the wrong shape and bad options', async () => {
    const bad = join(dir, 'bad.st');
    await writeSafetensorsFile(bad, [
      { name: 'fc1.weight', dtype: 'F32', shape: [2, 3], data: new Float32Array(6) },
    ]);
    expect(await evaluate(bad, 'heldout', data)).toMatchObject({ ok: false, code: 'invalid_weights' });
    const r = await train({ outPath: join(dir, 'x.st'), epochs: 0, batchSize: 1, data });
    expect(r).toMatchObject({ ok: false, code: 'invalid_options' });
    const s = await train({
      outPath: join(dir, 'x.st'),
      epochs: 1,
      batchSize: 1,
      data,
      shard: { rank: 5, worldSize: 2 },
    });
    expect(s).toMatchObject({ ok: false, code: 'invalid_options' });
  });

  it('reaches 90% held-out accuracy with 3 ranks x 3 FedAvg rounds', async () => {
    const t0 = performance.now();
    let global: string | undefined;
    let accuracy = 0;
    for (let round = 0; round < 3; round++) {
      const updates: { path: string; weight: number }[] = [];
      for (let rank = 0; rank < 3; rank++) {
        const outPath = join(dir, `round${round}-rank${rank}.st`);
        const r = await train({
          ...(global === undefined ? {} : { weightsPath: global }),
          outPath,
          epochs: 1,
          batchSize: 32,
          shard: { rank, worldSize: 3 },
          seed: 1,
          data,
        });
        if (!r.ok) throw new Error(r.message);
        updates.push({ path: outPath, weight: r.numSamples });
      }
      const h = await readHeaderFile(updates[0]!.path);
      if (!h.ok) throw new Error(h.message);
      const made = createAccumulator(h.header);
      if (!made.ok) throw new Error(made.message);
      for (const u of updates) expect((await made.accumulator.add(u.path, u.weight)).ok).toBe(true);
      global = join(dir, `global${round}.st`);
      expect((await made.accumulator.finish(global)).ok).toBe(true);
      const ev = await evaluate(global, 'heldout', data);
      if (!ev.ok) throw new Error(ev.message);
      accuracy = ev.accuracy;
    }
    expect(accuracy).toBeGreaterThanOrEqual(0.9);
    expect(performance.now() - t0).toBeLessThan(60_000);
    const final = await readTensorsF32(global!);
    expect(final.ok && final.tensors.size).toBe(4);
  });
});
