/**
 * The built-in MNIST trainer: loads global weights (or initialises them from a seed), trains
 * local epochs on one shard of the training split, and writes the updated weights as an F32
 * safetensors file with PyTorch names and shapes (fc1.weight [H,784], fc1.bias [H],
 * fc2.weight [10,H], fc2.bias [10]). Training is synchronous arithmetic, so it yields to the
 * event loop every few milliseconds: heartbeats and progress messages keep flowing.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { writeSafetensorsFile, type WrittenFile } from '../training/safetensors/encode.js';
import { readTensorsF32 } from '../training/safetensors/read.js';
import { initParams, mlpLayout, MlpWorkspace, Optimizer, type MlpLayout } from './mlp.js';
import {
  CLASSES,
  IMAGE_SIZE,
  loadMnist,
  splitRange,
  type MnistData,
  type Shard,
  type Split,
} from './mnist-data.js';
import { mulberry32, shuffleInPlace } from './random.js';

/** Progress after each mini-batch; loss and accuracy are running means over the epoch so far. */
export interface TrainProgress {
  epoch: number;
  batch: number;
  totalBatches: number;
  loss: number;
  accuracy: number;
}

/** Options of {@link train}. */
export interface TrainOptions {
  /** Global weights to start from; absent: initialise from `seed`. */
  weightsPath?: string;
  /** Where to write the updated weights (atomically). */
  outPath: string;
  /** Local epochs over the shard. */
  epochs: number;
  /** Mini-batch size. */
  batchSize: number;
  /** Shard of the training split. Default: the whole training split. */
  shard?: Shard;
  /** 'sgd' (with momentum) or 'adam'. Default 'sgd'. */
  optimizer?: 'sgd' | 'adam';
  /** Learning rate. Default 0.05 for SGD, 0.001 for Adam. */
  lr?: number;
  /** SGD momentum. Default 0.9. */
  momentum?: number;
  /** FedProx proximal coefficient mu (penalty mu/2 ||w - w_global||^2). Default 0 (FedAvg). */
  mu?: number;
  /** Seed of the initial weights (when there is no weightsPath) and of the batch order. Default 0. */
  seed?: number;
  /** Hidden units when initialising. Default 128. */
  hidden?: number;
  /** Preloaded data (saves half a second per call). Default: loaded here. */
  data?: MnistData;
  /** Called after every mini-batch. */
  onProgress?: (p: TrainProgress) => void;
}

/** A failed training or evaluation (bad weights file or options). */
export interface TrainerFailure {
  ok: false;
  code: 'invalid_weights' | 'invalid_options';
  message: string;
}

/** What {@link train} reports. */
export type TrainOutcome =
  | ({
      ok: true;
      /** Samples in the shard: the FedAvg weight of this update. */
      numSamples: number;
      /** Mean training loss and accuracy over the last epoch. */
      loss: number;
      accuracy: number;
      ms: number;
    } & WrittenFile)
  | TrainerFailure;

/** What {@link evaluate} reports. */
export type EvaluateOutcome = { ok: true; loss: number; accuracy: number; count: number } | TrainerFailure;

const TENSORS = ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'] as const;

/** Reads weights, checking names and shapes; the hidden size comes from fc1.weight. */
export async function loadWeights(
  path: string,
): Promise<{ ok: true; layout: MlpLayout; params: Float32Array } | TrainerFailure> {
  const r = await readTensorsF32(path);
  if (!r.ok) return { ok: false, code: 'invalid_weights', message: r.message };
  const hidden = r.tensors.get('fc1.weight')?.shape[0] ?? 0;
  const layout = mlpLayout(hidden);
  const expected: Record<(typeof TENSORS)[number], number[]> = {
    'fc1.weight': [hidden, IMAGE_SIZE],
    'fc1.bias': [hidden],
    'fc2.weight': [CLASSES, hidden],
    'fc2.bias': [CLASSES],
  };
  const params = new Float32Array(layout.total);
  let at = 0;
  for (const name of TENSORS) {
    const t = r.tensors.get(name);
    if (t === undefined || JSON.stringify(t.shape) !== JSON.stringify(expected[name])) {
      const message = `${name} must have shape ${JSON.stringify(expected[name])}, got ${JSON.stringify(t?.shape)}`;
      return { ok: false, code: 'invalid_weights', message };
    }
    params.set(t.data, at);
    at += t.data.length;
  }
  if (r.tensors.size !== TENSORS.length) {
    return { ok: false, code: 'invalid_weights', message: `expected exactly ${TENSORS.join(', ')}` };
  }
  return { ok: true, layout, params };
}

/** Writes weights as F32 safetensors with PyTorch names and shapes. */
export async function saveWeights(
  path: string,
  layout: MlpLayout,
  params: Float32Array,
): Promise<WrittenFile> {
  const H = layout.hidden;
  return writeSafetensorsFile(
    path,
    [
      {
        name: 'fc1.weight',
        dtype: 'F32',
        shape: [H, IMAGE_SIZE],
        data: params.subarray(layout.w1, layout.b1),
      },
      { name: 'fc1.bias', dtype: 'F32', shape: [H], data: params.subarray(layout.b1, layout.w2) },
      { name: 'fc2.weight', dtype: 'F32', shape: [CLASSES, H], data: params.subarray(layout.w2, layout.b2) },
      { name: 'fc2.bias', dtype: 'F32', shape: [CLASSES], data: params.subarray(layout.b2, layout.total) },
    ],
    { format: 'pt' },
  );
}

/** Trains `epochs` local epochs on a shard and writes the updated weights. */
export async function train(options: TrainOptions): Promise<TrainOutcome> {
  const t0 = performance.now();
  const { epochs, batchSize } = options;
  if (!(Number.isInteger(epochs) && epochs >= 1 && Number.isInteger(batchSize) && batchSize >= 1)) {
    return { ok: false, code: 'invalid_options', message: 'epochs and batch_size must be positive integers' };
  }
  const data = options.data ?? (await loadMnist());
  let range: { from: number; to: number };
  try {
    range = splitRange(data, options.shard ?? 'train');
  } catch (err) {
    return { ok: false, code: 'invalid_options', message: (err as Error).message };
  }
  let layout: MlpLayout;
  let params: Float32Array;
  if (options.weightsPath !== undefined) {
    const loaded = await loadWeights(options.weightsPath);
    if (!loaded.ok) return loaded;
    ({ layout, params } = loaded);
  } else {
    layout = mlpLayout(options.hidden ?? 128);
    params = initParams(layout.hidden, options.seed ?? 0);
  }
  const kind = options.optimizer ?? 'sgd';
  const mu = options.mu ?? 0;
  const opt = new Optimizer(
    { kind, lr: options.lr ?? (kind === 'sgd' ? 0.05 : 0.001), momentum: options.momentum ?? 0.9, mu },
    layout.total,
    mu > 0 ? Float32Array.from(params) : undefined,
  );
  const ws = new MlpWorkspace(layout);
  const grad = new Float32Array(layout.total);
  const order = Int32Array.from({ length: range.to - range.from }, (_, i) => range.from + i);
  // Batch order differs per shard and seed but is reproducible.
  const rand = mulberry32(((options.seed ?? 0) * 7919 + range.from) >>> 0);
  const totalBatches = Math.ceil(order.length / batchSize);
  let lossSum = 0;
  let correct = 0;
  let lastYield = performance.now();
  for (let epoch = 0; epoch < epochs; epoch++) {
    shuffleInPlace(order, rand);
    lossSum = 0;
    correct = 0;
    for (let b = 0; b < totalBatches; b++) {
      grad.fill(0);
      const from = b * batchSize;
      const to = Math.min(order.length, from + batchSize);
      for (let i = from; i < to; i++) {
        const n = order[i]!;
        const [l, ok] = ws.sample(params, data.images, n, data.labels[n]!, grad);
        lossSum += l;
        if (ok) correct++;
      }
      opt.step(params, grad, 1 / (to - from));
      options.onProgress?.({ epoch, batch: b, totalBatches, loss: lossSum / to, accuracy: correct / to });
      if (performance.now() - lastYield > 10) {
        await yieldToLoop();
        lastYield = performance.now();
      }
    }
  }
  const written = await saveWeights(options.outPath, layout, params);
  return {
    ok: true,
    ...written,
    numSamples: order.length,
    loss: lossSum / order.length,
    accuracy: correct / order.length,
    ms: performance.now() - t0,
  };
}

/** Loss and accuracy of the weights at `weightsPath` on a split (default: the held-out one). */
export async function evaluate(
  weightsPath: string,
  split: Split = 'heldout',
  data?: MnistData,
): Promise<EvaluateOutcome> {
  const loaded = await loadWeights(weightsPath);
  if (!loaded.ok) return loaded;
  const d = data ?? (await loadMnist());
  let range: { from: number; to: number };
  try {
    range = splitRange(d, split);
  } catch (err) {
    return { ok: false, code: 'invalid_options', message: (err as Error).message };
  }
  const stats = new MlpWorkspace(loaded.layout).evaluate(
    loaded.params,
    d.images,
    d.labels,
    range.from,
    range.to,
  );
  const count = range.to - range.from;
  return { ok: true, loss: stats.lossSum / count, accuracy: stats.correct / count, count };
}
