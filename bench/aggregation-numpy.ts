/**
 * The numpy side of bench/aggregation.ts: Debian's python3-numpy (/usr/bin/python3), one child
 * process per measurement so each peak RSS is its own.
 * - `bandwidth`: this machine's single-thread memory read bandwidth as numpy sees it (np.sum
 *   over a 1 GiB float64 array, best of 5; numpy's sum is SIMD and pairwise).
 * - `flower`: Flower's FedAvg (flwr.server.strategy.aggregate.aggregate, copied below) over
 *   updates already held in memory, as Flower holds them: `[layer * n for ...]`, then
 *   `reduce(np.add, ...)` per layer. Only the aggregate is timed; the peak counts the held
 *   updates, their scaled copies and the result.
 * - `average`: load every update, then np.average per tensor (the load is timed too).
 * The child runs without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (set on this machine for old
 * OpenBLAS builds; they slow a current numpy); tests and CI keep them.
 */
import { spawnSync } from 'node:child_process';

const PYTHON = '/usr/bin/python3';

const SCRIPT = String.raw`
import json, sys, time
from functools import reduce
import numpy as np
mode = sys.argv[1]
def status(key):
    # VmHWM/VmRSS of this process image (ru_maxrss would carry the parent's peak across exec).
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
def load(path):
    with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        header = json.loads(f.read(n))
        data = f.read()
    return [np.frombuffer(data, dtype=np.float32, count=(v['data_offsets'][1] - v['data_offsets'][0]) // 4,
                          offset=v['data_offsets'][0]).reshape(v['shape'])
            for k, v in header.items() if k != '__metadata__']
def aggregate(results):
    # Flower's FedAvg (flwr/server/strategy/aggregate.py), unchanged.
    num_examples_total = sum(num_examples for (_, num_examples) in results)
    weighted_weights = [[layer * num_examples for layer in weights] for weights, num_examples in results]
    weights_prime = [reduce(np.add, layer_updates) / num_examples_total for layer_updates in zip(*weighted_weights)]
    return weights_prime
out = {}
try:
    from threadpoolctl import threadpool_info
    out['blas'] = [{k: i.get(k) for k in ('internal_api', 'architecture', 'num_threads')} for i in threadpool_info()]
except Exception as e:
    out['blas'] = 'threadpoolctl not available: ' + type(e).__name__
base = status('VmRSS')
if mode == 'bandwidth':
    a = np.ones(2 ** 27, dtype=np.float64)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        s = a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t0))
    out.update(bytes_per_second=best, check=float(s))
else:
    paths = sys.argv[2].split(',')
    weights = [float(w) for w in sys.argv[3].split(',')]
    if mode == 'flower':
        results = [(load(p), w) for p, w in zip(paths, weights)]
        t0, c0 = time.perf_counter(), time.process_time()
        avg = aggregate(results)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        updates = [load(p) for p in paths]
        avg = [np.average(np.stack([u[i] for u in updates]), axis=0, weights=weights).astype(np.float32)
               for i in range(len(updates[0]))]
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.update(seconds=secs, cpu_seconds=cpu, check=float(avg[0].flat[0]))
out['peak_beyond_baseline'] = status('VmHWM') - base
print(json.dumps(out))
`;

/** What one numpy child reports. */
export interface NumpyReport {
  seconds?: number;
  /** CPU time (user + system, every thread) of the timed part. */
  cpu_seconds?: number;
  bytes_per_second?: number;
  peak_beyond_baseline: number;
  check: number;
  blas: unknown;
}

/** Runs one numpy measurement; a string says why it failed. */
export function numpy(
  mode: 'bandwidth' | 'flower' | 'average',
  paths: string[] = [],
  weights: number[] = [],
): NumpyReport | string {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync(PYTHON, ['-c', SCRIPT, mode, paths.join(','), weights.join(',')], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
    env,
  });
  if (r.status !== 0) return `numpy ${mode} failed: ${r.error?.message ?? r.stderr.slice(-500)}`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as NumpyReport;
}
