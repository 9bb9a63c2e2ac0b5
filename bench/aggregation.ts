/**
 * Aggregation benchmark (issue 4, point 8): FedAvg of N float32 updates of a ~100 MB model
 * through the real accumulator (createFedAvgSession: a worker thread adding each update as it
 * arrives into a float64 sum), side by side in one run with
 *   (a) this machine's single-thread memory read bandwidth (a Float64Array sum loop), and
 *   (b) the same FedAvg the numpy way (Debian's python3-numpy via /usr/bin/python3: every
 *       update loaded in memory, then np.average per tensor, as the common Python frameworks do).
 * It reports bytes averaged per second, peak RSS beyond the baseline, and for AI Farm the
 * event-loop delay p99 while it runs. AI Farm runs twice: as the server does (float32 sum,
 * adds that skip the NaN/Inf pass because uploads are scanned as they arrive), and with the
 * core's defaults (float64 sum, its own NaN/Inf pass).
 *
 *   npx tsx bench/aggregation.ts            # N = 8 and 32, 100 MiB model
 *   npx tsx bench/aggregation.ts --n 8 --mb 20
 *
 * The update files are written once to a temp folder (N x model size: 3.2 GB for N = 32)
 * and deleted at the end. They stay in the page cache, so every contender reads from memory.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createFedAvgSession } from '../src/training/aggregation/runner.js';
import { buildHeader } from '../src/training/safetensors/encode.js';
import { readTensorsF32 } from '../src/training/safetensors/read.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? (args[i + 1] as string) : def;
};
const NS = arg('n', '8,32').split(',').map(Number);
const MB = Number(arg('mb', '100'));
const PYTHON = '/usr/bin/python3';

/** Two weight matrices with 4096 columns, about MB MiB of float32 in all. */
const COLS = 4096;
const rowsTotal = Math.max(2, Math.round((MB * 1024 * 1024) / 4 / COLS));
const TENSORS = [
  { name: 'w1', dtype: 'F32' as const, shape: [Math.ceil(rowsTotal * 0.8), COLS] },
  { name: 'w2', dtype: 'F32' as const, shape: [rowsTotal - Math.ceil(rowsTotal * 0.8), COLS] },
];
const elements = rowsTotal * COLS;
const modelBytes = elements * 4;
const gb = (bytes: number) => bytes / 1e9;
const mib = (bytes: number) => bytes / 2 ** 20;

/** Writes update k: value (k + 1) + small per-element pattern, so every mean is checkable. */
async function writeUpdate(path: string, k: number): Promise<void> {
  const { prefix } = buildHeader(TENSORS);
  const fh = await open(path, 'w');
  try {
    await fh.write(prefix);
    const chunk = new Float32Array(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = k + 1 + (i % 7) * 0.001;
    for (let done = 0; done < elements; done += chunk.length) {
      const n = Math.min(chunk.length, elements - done);
      await fh.write(new Uint8Array(chunk.buffer, 0, n * 4));
    }
  } finally {
    await fh.close();
  }
}

/** Single-thread read bandwidth: sum of a 1 GiB Float64Array (best of 3). */
function readBandwidth(): number {
  const a = new Float64Array(2 ** 27);
  for (let i = 0; i < a.length; i++) a[i] = i & 1023;
  let best = 0;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i]!;
    const sec = (performance.now() - t0) / 1000;
    if (s < 0) console.log(s);
    best = Math.max(best, a.byteLength / sec);
  }
  return best;
}

interface Result {
  seconds: number;
  /** Bytes of updates averaged per second. */
  throughput: number;
  peakBeyondBaseline: number;
  loopP99Ms?: number;
}

async function aiFarm(
  paths: string[],
  weights: number[],
  out: string,
  verified: boolean,
  precision: 'float32' | 'float64',
): Promise<Result> {
  (globalThis as { gc?: () => void }).gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const { header } = buildHeader(TENSORS);
  const made = createFedAvgSession(header, { precision });
  if (!made.ok) throw new Error(made.message);
  const s = made.session;
  // Thread start-up is once per round, not per byte: wait until the worker answers.
  await s.finish(join(tmpdir(), 'never-written.safetensors'));
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const t0 = performance.now();
  // Updates arrive one after another, as uploads finish.
  for (const [i, p] of paths.entries()) {
    const r = await s.add(p, weights[i]!, { verified });
    if (!r.ok) throw new Error(r.message);
  }
  const fin = await s.finish(out);
  if (!fin.ok) throw new Error(fin.message);
  const seconds = (performance.now() - t0) / 1000;
  await s.close();
  loop.disable();
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return {
    seconds,
    throughput: (paths.length * modelBytes) / seconds,
    peakBeyondBaseline: peak - baseline,
    loopP99Ms: loop.percentile(99) / 1e6,
  };
}

const NUMPY = String.raw`
import json, sys, time
import numpy as np
paths = sys.argv[1].split(',')
weights = [float(w) for w in sys.argv[2].split(',')]
out = sys.argv[3]
def load(path):
    with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        header = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data, dtype=np.float32, count=(v['data_offsets'][1] - v['data_offsets'][0]) // 4,
                             offset=v['data_offsets'][0]).reshape(v['shape'])
            for k, v in header.items() if k != '__metadata__'}
def status(key):
    # VmHWM/VmRSS of this process image (ru_maxrss would carry the parent's peak across exec).
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
base = status('VmRSS')
t0 = time.perf_counter()
updates = [load(p) for p in paths]          # every update in memory, as Flower keeps them
avg = {k: np.average(np.stack([u[k] for u in updates]), axis=0, weights=weights).astype(np.float32)
       for k in updates[0]}
secs = time.perf_counter() - t0
np.save(out, avg['w1'][:1, :8])
peak = status('VmHWM')
print(json.dumps({'seconds': secs, 'peak_beyond_baseline': peak - base, 'check': float(avg['w1'][0, 0])}))
`;

function numpyWay(paths: string[], weights: number[], out: string): (Result & { check: number }) | string {
  const r = spawnSync(PYTHON, ['-c', NUMPY, paths.join(','), weights.join(','), out], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) return `numpy way failed: ${r.error?.message ?? r.stderr.slice(-500)}`;
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    seconds: number;
    peak_beyond_baseline: number;
    check: number;
  };
  return {
    seconds: j.seconds,
    throughput: (paths.length * modelBytes) / j.seconds,
    peakBeyondBaseline: j.peak_beyond_baseline,
    check: j.check,
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-bench-agg-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const maxN = Math.max(...NS);
    console.log(
      `model: ${mib(modelBytes).toFixed(1)} MiB float32 (${elements} parameters); N = ${NS.join(', ')}`,
    );
    console.log(`writing ${maxN} update files to ${dir} ...`);
    const paths: string[] = [];
    for (let k = 0; k < maxN; k++) {
      const p = join(dir, `update-${k}.safetensors`);
      await writeUpdate(p, k);
      paths.push(p);
    }
    const bw = readBandwidth();
    const load = loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    console.log(
      `single-thread memory read bandwidth: ${gb(bw).toFixed(2)} GB/s; load ${load} on ${cpus().length} CPUs\n`,
    );
    const rows: string[][] = [];
    for (const n of NS) {
      const ps = paths.slice(0, n);
      const weights = ps.map((_, k) => k + 1);
      // Expected first value: sum((k+1) * (k+1)) / sum(k+1).
      const expected = weights.reduce((s, w) => s + w * w, 0) / weights.reduce((s, w) => s + w, 0);
      // The server's path: uploads are scanned for NaN/Inf while they arrive, so adds skip that pass.
      const ours = await aiFarm(ps, weights, join(dir, `mean-${n}.safetensors`), true, 'float32');
      const scanned = await aiFarm(ps, weights, join(dir, `scan-${n}.safetensors`), false, 'float64');
      rmSync(join(dir, `scan-${n}.safetensors`), { force: true });
      const check = await readTensorsF32(join(dir, `mean-${n}.safetensors`)).then((r) =>
        r.ok ? r.tensors.get('w1')!.data[0]! : NaN,
      );
      rmSync(join(dir, `mean-${n}.safetensors`), { force: true });
      const np = numpyWay(ps, weights, join(dir, `np-${n}.npy`));
      const npOk = typeof np !== 'string';
      rows.push([
        `N=${n}`,
        'AI Farm as the server runs it (float32 sum; NaN/Inf scanned on upload)',
        `${gb(ours.throughput).toFixed(2)} GB/s`,
        `${(ours.throughput / bw).toFixed(2)}x`,
        `${mib(ours.peakBeyondBaseline).toFixed(0)} MiB (${(ours.peakBeyondBaseline / modelBytes).toFixed(2)} models)`,
        `${ours.loopP99Ms!.toFixed(1)} ms`,
        `${ours.seconds.toFixed(2)} s`,
        Math.abs(check - expected) < 1e-3 ? 'ok' : `WRONG ${check} != ${expected}`,
      ]);
      rows.push([
        `N=${n}`,
        'AI Farm float64 sum, with its own NaN/Inf pass',
        `${gb(scanned.throughput).toFixed(2)} GB/s`,
        `${(scanned.throughput / bw).toFixed(2)}x`,
        `${mib(scanned.peakBeyondBaseline).toFixed(0)} MiB (${(scanned.peakBeyondBaseline / modelBytes).toFixed(2)} models)`,
        `${scanned.loopP99Ms!.toFixed(1)} ms`,
        `${scanned.seconds.toFixed(2)} s`,
        '',
      ]);
      rows.push(
        npOk
          ? [
              `N=${n}`,
              'numpy (all in memory, np.average)',
              `${gb(np.throughput).toFixed(2)} GB/s`,
              `${(np.throughput / bw).toFixed(2)}x`,
              `${mib(np.peakBeyondBaseline).toFixed(0)} MiB (${(np.peakBeyondBaseline / modelBytes).toFixed(2)} models)`,
              '-',
              `${np.seconds.toFixed(2)} s`,
              Math.abs(np.check - expected) < 1e-3 ? 'ok' : `WRONG ${np.check} != ${expected}`,
            ]
          : [`N=${n}`, np, '', '', '', '', '', ''],
      );
      if (npOk) {
        const goals = [
          `throughput >= numpy: ${ours.throughput >= np.throughput ? 'met' : 'NOT met'} (${(ours.throughput / np.throughput).toFixed(2)}x)`,
          `peak beyond baseline <= 2 models: ${ours.peakBeyondBaseline <= 2 * modelBytes ? 'met' : 'NOT met'}`,
          `event-loop p99 < 50 ms: ${ours.loopP99Ms! < 50 ? 'met' : 'NOT met'}`,
        ];
        console.log(`N=${n}: ${goals.join('; ')}`);
      }
    }
    const head = [
      'N',
      'method',
      'averaged',
      'of read bw',
      'peak RSS beyond baseline',
      'loop p99',
      'time',
      'result',
    ];
    const table = [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
    console.log(`\n${table}`);
    if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, table);
  } finally {
    cleanup();
  }
}

await main();
