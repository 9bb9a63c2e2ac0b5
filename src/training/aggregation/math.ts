/**
 * Pure aggregation kernels on in-memory chunks (no I/O). A chunk of N updates is N Float32Arrays
 * ("columns" below are the N values of one coordinate). Sums are kept in float64.
 */

/** sum[offset + i] += weight * values[i] for i < count. */
export function weightedAccumulate(
  sum: Float64Array | Float32Array,
  offset: number,
  values: Float32Array,
  count: number,
  weight: number,
): void {
  for (let i = 0; i < count; i++) sum[offset + i]! += weight * values[i]!;
}

/** Sorts a[0 .. n) ascending; insertion sort below 32 elements, where it beats the native sort's overhead. */
export function sortPrefix(a: Float64Array, n: number): void {
  if (n > 32) {
    a.subarray(0, n).sort();
    return;
  }
  for (let i = 1; i < n; i++) {
    const v = a[i]!;
    let j = i - 1;
    while (j >= 0 && a[j]! > v) {
      a[j + 1] = a[j]!;
      j--;
    }
    a[j + 1] = v;
  }
}

/**
 * Coordinate-wise trimmed mean: for each coordinate, drops the `trim` smallest and `trim`
 * largest of the N values and averages the rest. `trim = 0` is the plain mean; with
 * 2 * trim = N - 1 it is the median of an odd N.
 */
export function trimmedMeanChunk(
  cols: readonly Float32Array[],
  count: number,
  trim: number,
  out: Float32Array,
): void {
  const n = cols.length;
  if (2 * trim >= n) throw new RangeError(`cannot trim ${trim} from each end of ${n} values`);
  const col = new Float64Array(n);
  const kept = n - 2 * trim;
  for (let j = 0; j < count; j++) {
    for (let i = 0; i < n; i++) col[i] = cols[i]![j]!;
    sortPrefix(col, n);
    let s = 0;
    for (let i = trim; i < n - trim; i++) s += col[i]!;
    out[j] = s / kept;
  }
}

/** Coordinate-wise median (the mean of the two middle values when N is even). */
export function medianChunk(cols: readonly Float32Array[], count: number, out: Float32Array): void {
  const n = cols.length;
  if (n === 0) throw new RangeError('median of no updates');
  const col = new Float64Array(n);
  const h = n >> 1;
  for (let j = 0; j < count; j++) {
    for (let i = 0; i < n; i++) col[i] = cols[i]![j]!;
    sortPrefix(col, n);
    out[j] = n % 2 === 1 ? col[h]! : (col[h - 1]! + col[h]!) / 2;
  }
}

/** Plain (unweighted) mean of the columns, used to average the updates Krum selected. */
export function meanChunk(cols: readonly Float32Array[], count: number, out: Float32Array): void {
  const n = cols.length;
  for (let j = 0; j < count; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += cols[i]![j]!;
    out[j] = s / n;
  }
}

/**
 * Adds this chunk's share of every pairwise squared distance: dist[i*n + j] (i < j) += sum over
 * the chunk of (a_i - a_j)^2. Summing these partial sums over all chunks gives the full
 * squared distances without holding any update whole. Rows whose `skip[i]` is set are left out.
 */
export function accumulatePairwiseSquared(
  cols: readonly Float32Array[],
  count: number,
  dist: Float64Array,
  skip?: readonly boolean[],
): void {
  const n = cols.length;
  for (let i = 0; i < n; i++) {
    if (skip?.[i]) continue;
    const a = cols[i]!;
    for (let j = i + 1; j < n; j++) {
      if (skip?.[j]) continue;
      const b = cols[j]!;
      let s = 0;
      for (let k = 0; k < count; k++) {
        const d = a[k]! - b[k]!;
        s += d * d;
      }
      dist[i * n + j]! += s;
    }
  }
}

/**
 * Krum scores (Blanchard et al., 2017): for each of the `candidates`, the sum of its squared
 * distances to its n - f - 2 nearest other candidates, n = candidates.length.
 * `dist` is the upper triangle filled by {@link accumulatePairwiseSquared} (stride `stride`).
 */
export function krumScores(
  dist: Float64Array,
  stride: number,
  candidates: readonly number[],
  f: number,
): number[] {
  const n = candidates.length;
  const k = n - f - 2;
  if (n < 2 * f + 3) throw new RangeError(`Krum needs n >= 2f + 3 updates (n=${n}, f=${f})`);
  return candidates.map((i) => {
    const d = candidates
      .filter((j) => j !== i)
      .map((j) => (i < j ? dist[i * stride + j]! : dist[j * stride + i]!))
      .sort((x, y) => x - y);
    return d.slice(0, k).reduce((s, x) => s + x, 0);
  });
}

/**
 * Multi-Krum selection: the `m` candidates with the lowest scores (ties to the earlier input),
 * in input order. m = 1 is Krum.
 */
export function krumSelect(candidates: readonly number[], scores: readonly number[], m: number): number[] {
  const order = candidates.map((c, i) => ({ c, s: scores[i]! })).sort((a, b) => a.s - b.s || a.c - b.c);
  return order
    .slice(0, m)
    .map((x) => x.c)
    .sort((a, b) => a - b);
}

/** Number of values trimmed from each end: `trim` as given, else floor(beta * n). */
export function trimCount(n: number, params: { beta?: number; trim?: number }): number {
  return params.trim ?? Math.floor((params.beta ?? 0) * n);
}
