/**
 * Aggregation benchmark (issue 4 point 8, issue 15 points 3 and 5): FedAvg and the robust
 * strategies over N stored updates of a ~100 MiB model, through the built server's code
 * (dist/, rebuilt here when stale), side by side in one run with numpy (bench/aggregation-numpy.ts):
 * this machine's memory read bandwidth as numpy measures it, Flower's FedAvg over updates held
 * in memory, and np.average with the loads. For each it reports bytes of updates aggregated per
 * second, peak RSS beyond the baseline (in model sizes) and, for AI Farm, the event-loop p99.
 *
 * AI Farm rows:
 * - FedAvg as the server runs it: a parallel session (one thread per core), float32 sum, adds
 *   that skip the NaN/Inf pass because uploads are scanned as they arrive; F32 updates, and
 *   the same model in BF16 (decoded and accumulated in float32 in the same pass);
 * - FedAvg with the core's defaults (float64 sum, its own NaN/Inf pass);
 * - median, trimmed mean (beta 0.1) and Krum (f = 1) through aggregate(), as a round's close runs them.
 *
 *   npx tsx bench/aggregation.ts                 # N = 8 and 32, 100 MiB model; robust at N = 8
 *   npx tsx bench/aggregation.ts --n 8 --mb 20 --robust 8 --json
 *
 * --json prints one JSON document on stdout (the tables go to stderr). The update files
 * (N x model size: 3.2 GB of F32 and 1.6 GB of BF16 for N = 32) are written once to a temp
 * folder and deleted at the end; they stay in the page cache, so every contender reads memory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';
import type { StrategySpec } from '../src/training/aggregation/types.js';
import { buildHeader, type TensorSpec } from '../src/training/safetensors/encode.js';
import { readTensorsF32 } from '../src/training/safetensors/read.js';
import { numpy } from './aggregation-numpy.js';
import { gb, mib, resultsTable, type Goal, type Row } from './aggregation-report.js';
import { builtRunner, jsReadBandwidth, writeUpdate, type Runner } from './aggregation-setup.js';
import { buildWasm } from '../scripts/build-wasm.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? (args[i + 1] as string) : def;
};
const NS = arg('n', '8,32').split(',').map(Number);
const ROBUST_NS = arg('robust', String(Math.min(...NS)))
  .split(',')
  .filter((s) => s !== '' && s !== 'none')
  .map(Number);
const MB = Number(arg('mb', '100'));
const JSON_OUT = args.includes('--json');
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// A collector to call before each baseline, so memory a previous contender left for the GC
// (a session's shared memory is freed only when collected) does not hide in the baseline.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Collects, then gives V8 time to hand freed array buffers back (it frees them off-thread). */
async function settle(): Promise<void> {
  gc();
  await new Promise((r) => setTimeout(r, 500));
}
/** With --json the tables go to stderr, so stdout is the JSON document alone. */
const say = (s: string) => (JSON_OUT ? process.stderr.write(`${s}\n`) : console.log(s));

/** Two weight matrices with 4096 columns, about MB MiB of float32 in all. */
const COLS = 4096;
const rowsTotal = Math.max(2, Math.round((MB * 1024 * 1024) / 4 / COLS));
const tensors = (dtype: 'F32' | 'BF16'): TensorSpec[] => [
  { name: 'w1', dtype, shape: [Math.ceil(rowsTotal * 0.8), COLS] },
  { name: 'w2', dtype, shape: [rowsTotal - Math.ceil(rowsTotal * 0.8), COLS] },
];
const elements = rowsTotal * COLS;
const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');

/** Samples RSS and the event loop while `fn` runs; `peak` is the RSS beyond the baseline. */
async function measure<T>(
  fn: () => Promise<T>,
): Promise<{ value: T; seconds: number; cpuSeconds: number; peak: number; p99: number }> {
  await settle();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const value = await fn().finally(() => {
    loop.disable();
    clearInterval(sampler);
  });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  peak = Math.max(peak, process.memoryUsage().rss);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return { value, seconds, cpuSeconds, peak: peak - baseline, p99: loop.percentile(99) / 1e6 };
}

async function fedAvgRow(
  runner: Runner,
  n: number,
  method: string,
  paths: string[],
  dtype: 'F32' | 'BF16',
  verified: boolean,
  precision: 'float32' | 'float64',
  expected: number,
  out: string,
): Promise<Row> {
  const modelBytes = elements * (dtype === 'F32' ? 4 : 2);
  const { header } = buildHeader(tensors(dtype));
  // Memory from before the session exists: the sum and the threads count.
  await settle();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  const made = runner.createFedAvgSession(header, { precision });
  if (!made.ok) throw new Error(made.message);
  const s = made.session;
  // Thread start-up (code, kernels, first touch of the sum's pages) is once per round, not per
  // byte, and overlaps the round's first upload in the server: timed apart.
  const r0 = performance.now();
  await s.ready();
  const startSeconds = (performance.now() - r0) / 1000;
  let foldSeconds = 0;
  const m = await measure(async () => {
    const t0 = performance.now();
    for (const [i, p] of paths.entries()) {
      const r = await s.add(p, i + 1, { verified });
      if (!r.ok) throw new Error(r.message);
    }
    foldSeconds = (performance.now() - t0) / 1000;
    const fin = await s.finish(out);
    if (!fin.ok) throw new Error(fin.message);
  });
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss, baseline + m.peak);
  await s.close();
  gc();
  const check = await firstValue(out);
  rmSync(out, { force: true });
  // The output has the updates' dtype: a BF16 mean is rounded to 8 significant bits.
  const tolerance = dtype === 'BF16' ? expected * 2 ** -8 : 1e-3;
  return {
    n,
    method: `${method} (${s.threads} threads)`,
    foldBytesPerSecond: (paths.length * modelBytes) / foldSeconds,
    startSeconds,
    bytesPerSecond: (paths.length * modelBytes) / m.seconds,
    seconds: m.seconds,
    bytesPerCpuSecond: (paths.length * modelBytes) / m.cpuSeconds,
    peakBeyondBaseline: peak - baseline,
    peakModels: (peak - baseline) / modelBytes,
    loopP99Ms: m.p99,
    check: Math.abs(check - expected) <= tolerance ? 'ok' : `WRONG ${check} != ${expected}`,
  };
}

async function firstValue(path: string): Promise<number> {
  const r = await readTensorsF32(path);
  return r.ok ? r.tensors.get('w1')!.data[0]! : NaN;
}

async function robustRow(
  runner: Runner,
  n: number,
  spec: StrategySpec,
  paths: string[],
  out: string,
): Promise<Row> {
  const modelBytes = elements * 4;
  const { header } = buildHeader(tensors('F32'));
  const inputs = paths.map((path, i) => ({ path, weight: i + 1 }));
  const m = await measure(() => runner.aggregate({ ...spec, inputs, globalHeader: header, outPath: out }));
  if (!m.value.ok) throw new Error(m.value.message);
  // Median and trimmed mean of k + 1 (k < n) at element 0; Krum picks one of the updates.
  const check = await firstValue(out);
  rmSync(out, { force: true });
  const expected = spec.strategy === 'krum' ? undefined : (n + 1) / 2;
  const ok =
    expected === undefined ? Number.isInteger(check) && check >= 1 && check <= n : check === expected;
  return {
    n,
    method: `${spec.strategy} ${JSON.stringify(spec.params ?? {})}`,
    bytesPerSecond: (paths.length * modelBytes) / m.seconds,
    seconds: m.seconds,
    bytesPerCpuSecond: (paths.length * modelBytes) / m.cpuSeconds,
    peakBeyondBaseline: m.peak,
    peakModels: m.peak / modelBytes,
    loopP99Ms: m.p99,
    check: ok ? 'ok' : `WRONG ${check}`,
  };
}

function numpyRow(n: number, mode: 'flower' | 'average', paths: string[], expected: number): Row | string {
  const r = numpy(
    mode,
    paths,
    paths.map((_, i) => i + 1),
  );
  if (typeof r === 'string') return r;
  const modelBytes = elements * 4;
  return {
    n,
    method:
      mode === 'flower' ? "numpy, Flower's aggregate over updates in memory" : 'numpy, load + np.average',
    bytesPerSecond: (paths.length * modelBytes) / r.seconds!,
    seconds: r.seconds!,
    bytesPerCpuSecond: (paths.length * modelBytes) / r.cpu_seconds!,
    peakBeyondBaseline: r.peak_beyond_baseline,
    peakModels: r.peak_beyond_baseline / modelBytes,
    check: Math.abs(r.check - expected) < 1e-2 ? 'ok' : `WRONG ${r.check} != ${expected}`,
  };
}

async function main(): Promise<void> {
  const runner = await builtRunner(ROOT, say);
  // The WebAssembly kernels, assembled from their .wat sources into src/ and dist/ (milliseconds).
  await buildWasm();
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-bench-agg-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  // Several GB of update files: removed on Ctrl-C and on kill too.
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => {
      cleanup();
      process.exit(code);
    });
  }
  try {
    const loadStart = load();
    const maxN = Math.max(...NS, ...ROBUST_NS);
    say(`model: ${mib(elements * 4).toFixed(1)} MiB as F32 (${elements} parameters); N = ${NS.join(', ')}`);
    say(`writing ${maxN} F32 and ${Math.max(...NS)} BF16 update files to ${dir} ...`);
    const f32: string[] = [];
    const bf16: string[] = [];
    for (let k = 0; k < maxN; k++) {
      f32.push(join(dir, `f32-${k}.safetensors`));
      await writeUpdate(f32[k]!, k, 'F32', tensors('F32'), elements);
      if (k < Math.max(...NS)) {
        bf16.push(join(dir, `bf16-${k}.safetensors`));
        await writeUpdate(bf16[k]!, k, 'BF16', tensors('BF16'), elements);
      }
    }
    const np = numpy('bandwidth');
    const npBandwidth = typeof np === 'string' ? NaN : np.bytes_per_second!;
    // The scalar JS figure is taken at the end: its 1 GiB array would sit in the baselines.
    let jsBandwidth = NaN;
    say(
      `single-thread memory read bandwidth (numpy): ${gb(npBandwidth).toFixed(2)} GB/s; ` +
        `load ${loadStart} on ${cpus().length} CPUs`,
    );
    if (typeof np === 'string') say(np);
    else say(`numpy BLAS: ${JSON.stringify(np.blas)}`);
    const rows: Row[] = [];
    // Each row as it comes, so a long run shows progress.
    const record = (r: Row) => {
      rows.push(r);
      say(
        `N=${r.n} ${r.method}: ${gb(r.bytesPerSecond).toFixed(2)} GB/s, ${mib(r.peakBeyondBaseline).toFixed(0)} MiB, ${r.check} (load ${load()})`,
      );
    };
    const failures: string[] = [];
    const goals: Goal[] = [];
    for (const n of NS) {
      const weights = Array.from({ length: n }, (_, k) => k + 1);
      // Element 0 of update k is k + 1: the weighted mean is sum((k+1)^2) / sum(k+1).
      const expected = weights.reduce((s, w) => s + w * w, 0) / weights.reduce((s, w) => s + w, 0);
      const out = join(dir, `out-${n}.safetensors`);
      const ps = f32.slice(0, n);
      const server = await fedAvgRow(
        runner,
        n,
        'AI Farm FedAvg as the server runs it, F32',
        ps,
        'F32',
        true,
        'float32',
        expected,
        out,
      );
      record(server);
      record(
        await fedAvgRow(
          runner,
          n,
          'AI Farm FedAvg as the server runs it, BF16',
          bf16.slice(0, n),
          'BF16',
          true,
          'float32',
          expected,
          out,
        ),
      );
      record(
        await fedAvgRow(
          runner,
          n,
          'AI Farm FedAvg, float64 sum + own NaN/Inf pass, F32',
          ps,
          'F32',
          false,
          'float64',
          expected,
          out,
        ),
      );
      for (const mode of ['flower', 'average'] as const) {
        const r = numpyRow(n, mode, ps, expected);
        if (typeof r === 'string') failures.push(r);
        else record(r);
        if (mode === 'flower' && typeof r !== 'string') {
          goals.push({
            n,
            goal: "FedAvg (adds + finish) >= Flower's numpy aggregate",
            met: server.bytesPerSecond >= r.bytesPerSecond,
            value: server.bytesPerSecond / r.bytesPerSecond,
          });
          goals.push({
            n,
            goal: "FedAvg (adds alone) >= Flower's numpy aggregate",
            met: server.foldBytesPerSecond! >= r.bytesPerSecond,
            value: server.foldBytesPerSecond! / r.bytesPerSecond,
          });
        }
      }
      goals.push({
        n,
        goal: "FedAvg (adds + finish) >= 0.15x numpy's read bandwidth",
        met: server.bytesPerSecond >= 0.15 * npBandwidth,
        value: server.bytesPerSecond / npBandwidth,
      });
      goals.push({
        n,
        goal: "FedAvg (adds alone) >= 0.15x numpy's read bandwidth",
        met: server.foldBytesPerSecond! >= 0.15 * npBandwidth,
        value: server.foldBytesPerSecond! / npBandwidth,
      });
      goals.push({
        n,
        goal: 'peak beyond baseline <= 1.5 models',
        met: server.peakModels <= 1.5,
        value: server.peakModels,
      });
    }
    for (const n of ROBUST_NS) {
      const out = join(dir, `robust-${n}.safetensors`);
      for (const spec of [
        { strategy: 'median' },
        { strategy: 'trimmed_mean', params: { beta: 0.1 } },
        { strategy: 'krum', params: { f: 1 } },
      ] as StrategySpec[]) {
        const r = await robustRow(runner, n, spec, f32.slice(0, n), out);
        record(r);
        goals.push({
          n,
          goal: `${spec.strategy} >= 0.5 GB/s`,
          met: r.bytesPerSecond >= 0.5e9,
          value: gb(r.bytesPerSecond),
        });
      }
    }
    jsBandwidth = jsReadBandwidth();
    say(`single-thread memory read bandwidth (scalar JS loop): ${gb(jsBandwidth).toFixed(2)} GB/s`);
    const loadEnd = load();
    say(`\n${resultsTable(rows, npBandwidth)}\n`);
    for (const g of goals) say(`N=${g.n}: ${g.goal}: ${g.met ? 'met' : 'NOT met'} (${g.value.toFixed(2)})`);
    for (const f of failures) say(f);
    say(`load: ${loadStart} at the start, ${loadEnd} at the end`);
    if (JSON_OUT) {
      const doc = {
        benchmark: 'aggregation',
        cpus: cpus().length,
        load: { start: loadStart, end: loadEnd },
        model: { parameters: elements, f32Bytes: elements * 4 },
        readBandwidth: {
          numpy: npBandwidth,
          scalarJs: jsBandwidth,
          numpyBlas: typeof np === 'string' ? np : np.blas,
        },
        rows,
        goals,
        failures,
      };
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    }
  } finally {
    cleanup();
  }
}

await main();
