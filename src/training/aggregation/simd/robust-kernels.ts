/**
 * SIMD kernels of the robust strategies (robust.wat beside this file) over one thread's
 * WebAssembly memory: the coordinate-wise median and trimmed mean by a sorting network run on 8
 * coordinates at once (the lanes of two f32x4), and Krum's squared distances. They give what the
 * scalar reference (math.ts) gives: the same float32 results for median, trimmed mean and mean
 * (a zero's sign aside: the network orders -0 before +0 where an insertion sort keeps input
 * order), and distances summed in another order (the last bits may differ, as the parallel
 * strategies already allow). Median and trimmed mean also say whether every input was finite
 * (see robust.wat); the mean and the distances expect finite inputs (callers scan first).
 */
import { wasmModuleBytes } from '../../safetensors/wasm-module.js';
import { medianChunk, trimmedMeanChunk } from '../math.js';

/** Above this many updates the network (about N log² N / 4 comparators) is left to the JS sort. */
export const MAX_NETWORK_UPDATES = 256;

/**
 * Batcher's odd-even merge sort for `n` values, as comparator pairs [lo, hi] flattened: built for
 * the next power of two and cut to n (the missing values act as +Inf at the top, where every
 * comparator that touches them leaves them: dropping those comparators changes nothing).
 */
export function sortingNetwork(n: number): Int32Array {
  const pairs: number[] = [];
  let size = 1;
  while (size < n) size <<= 1;
  for (let p = 1; p < size; p <<= 1) {
    for (let k = p; k >= 1; k >>= 1) {
      for (let j = k % p; j + k < size; j += 2 * k) {
        for (let i = 0; i < Math.min(k, size - j - k); i++) {
          const lo = i + j;
          const hi = i + j + k;
          if (Math.floor(lo / (2 * p)) === Math.floor(hi / (2 * p)) && hi < n) pairs.push(lo, hi);
        }
      }
    }
  }
  return Int32Array.from(pairs);
}

/** The arguments median and trimmed_mean share (robust.wat): addresses, counts, the network. */
type SortArgs = [
  cols: number,
  n: number,
  count: number,
  net: number,
  pairs: number,
  tile: number,
  out: number,
];

interface RobustExports {
  median(...args: SortArgs): number;
  trimmed_mean(...args: [...SortArgs, trim: number]): number;
  sq_dist(a: number, b: number, count: number): number;
}

let compiled: WebAssembly.Module | undefined;
/** The module assembled from robust.wat, compiled once per thread. */
export function robustModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(wasmModuleBytes(new URL('./robust.wasm', import.meta.url)));
  return compiled;
}

/** Bytes of scratch {@link createRobustKernels} needs for up to `n` updates. */
export function robustScratchBytes(n: number): number {
  const comparators = sortingNetwork(Math.min(n, MAX_NETWORK_UPDATES)).length / 2;
  return align(n * 4) + align(n * TILE_ENTRY) + align(comparators * 8);
}

const align = (bytes: number) => Math.ceil(bytes / 64) * 64;

/** Bytes of one update's entry in the sorting tile: 8 coordinates, two f32x4. */
const TILE_ENTRY = 32;

/** The robust kernels over float32 columns held in `memory` (shared), with scratch at `scratch`. */
export interface RobustKernels {
  /**
   * out[i] = median of the columns at element i, i < count; columns and out are byte addresses.
   * Returns true when every input was seen finite on the way (the result is then good); false
   * when one was not, or was not looked at (the caller scans, and uses out only if all are).
   */
  median(cols: readonly number[], count: number, out: number): boolean;
  /** out[i] = mean of the columns at element i once the `trim` smallest and largest are dropped; returns as median. */
  trimmedMean(cols: readonly number[], count: number, trim: number, out: number): boolean;
  /** Sum over i < count of (a[i] - b[i])^2 in float64. */
  squaredDistance(a: number, b: number, count: number): number;
}

/** Kernels over `memory`; [scratch, scratch + robustScratchBytes(maxUpdates)) is theirs. */
export function createRobustKernels(
  memory: WebAssembly.Memory,
  scratch: number,
  maxUpdates: number,
): RobustKernels {
  const wasm = new WebAssembly.Instance(robustModule(), { env: { mem: memory } })
    .exports as unknown as RobustExports;
  const list = scratch;
  const tile = list + align(maxUpdates * 4);
  const net = tile + align(maxUpdates * TILE_ENTRY);
  const networks = new Map<number, number>();
  const heap = () => memory.buffer;
  const f32 = (addr: number, n: number) => new Float32Array(heap(), addr, n);
  /** Writes the column list and the network for n columns; returns the comparator count. */
  const prepare = (cols: readonly number[], sorted: boolean): number => {
    new Int32Array(heap(), list, cols.length).set(cols);
    if (!sorted) return 0;
    let pairs = networks.get(cols.length);
    if (pairs === undefined) {
      // One network is kept in memory at a time: rewritten when the number of columns changes.
      networks.clear();
      const offsets = sortingNetwork(cols.length).map((i) => i * TILE_ENTRY);
      new Int32Array(heap(), net, offsets.length).set(offsets);
      pairs = offsets.length / 2;
      networks.set(cols.length, pairs);
    }
    return pairs;
  };
  /** The last count % 8 elements, by the scalar reference. */
  const tail = (
    cols: readonly number[],
    count: number,
    out: number,
    fn: (c: Float32Array[], n: number, o: Float32Array) => void,
  ) => {
    const from = count & ~7;
    if (from === count) return;
    fn(
      cols.map((c) => f32(c + from * 4, count - from)),
      count - from,
      f32(out + from * 4, count - from),
    );
  };
  const small = (n: number) => n <= MAX_NETWORK_UPDATES;
  /** Whether the last count % 8 elements of every column are finite. */
  const tailFinite = (cols: readonly number[], count: number) => {
    const from = count & ~7;
    return cols.every((c) => f32(c + from * 4, count - from).every((v) => v - v === 0));
  };
  return {
    median(cols, count, out) {
      if (!small(cols.length)) {
        medianChunk(
          cols.map((c) => f32(c, count)),
          count,
          f32(out, count),
        );
        return false;
      }
      const pairs = prepare(cols, true);
      const bad = wasm.median(list, cols.length, count & ~7, net, pairs, tile, out);
      tail(cols, count, out, medianChunk);
      return bad === 0 && tailFinite(cols, count);
    },
    trimmedMean(cols, count, trim, out) {
      if (2 * trim >= cols.length)
        throw new RangeError(`cannot trim ${trim} from each end of ${cols.length} values`);
      if (!small(cols.length) && trim > 0) {
        trimmedMeanChunk(
          cols.map((c) => f32(c, count)),
          count,
          trim,
          f32(out, count),
        );
        return false;
      }
      // No trim: the plain mean, with no sort (and so no finiteness seen).
      const sorted = trim > 0;
      const pairs = prepare(cols, sorted);
      const bad = wasm.trimmed_mean(list, cols.length, count & ~7, net, pairs, tile, out, trim);
      tail(cols, count, out, (c, n, o) => trimmedMeanChunk(c, n, trim, o));
      return (sorted || cols.length === 1) && bad === 0 && tailFinite(cols, count);
    },
    squaredDistance(a, b, count) {
      const from = count & ~3;
      let s = wasm.sq_dist(a, b, from);
      if (from < count) {
        const x = f32(a, count);
        const y = f32(b, count);
        for (let i = from; i < count; i++) {
          const d = x[i]! - y[i]!;
          s += d * d;
        }
      }
      return s;
    },
  };
}
