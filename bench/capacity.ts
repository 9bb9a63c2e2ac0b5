/**
 * Connection capacity benchmark (issue 6, point 5): N simulated workers held open on one
 * AI Farm server process (the real startServer, SQLite) and, in the same run with the same
 * load generators and heartbeats, on a bare `ws` server; memory per connection, idle CPU
 * and event-loop delay of each. See docs/benchmarks.md.
 *
 *   npx tsx bench/capacity.ts            # 10,000 connections, a 60 s window per server (~5 min)
 *   npx tsx bench/capacity.ts --quick    # 2,000 connections, 15 s windows
 *   npx tsx bench/capacity.ts --help
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import cliProgress from 'cli-progress';
import type {
  ClientsCounters,
  ClientsMessage,
  ClientsRequest,
  MemorySample,
  ServerKind,
  ServerMessage,
  ServerRequest,
  ServerStats,
} from './capacity-common.js';
import { median, sleep } from './common.js';
import { summariseProfile, type ProfileSummary } from './cpuprofile.js';

const HELP = `Usage: npx tsx bench/capacity.ts [options]

  --n <count>           simulated workers held open on each server (default 10000)
  --duration <seconds>  measured window of steady heartbeats per server (default 60)
  --heartbeat <seconds> each worker's heartbeat interval; the run's workers are spread evenly
                        over it (default 30)
  --warmup <seconds>    heartbeats before the window starts (default 10)
  --generators <count>  load-generator processes, the workers split between them (default 2)
  --parallel <count>    connection attempts in flight per generator (default 100)
  --sources <count>     loopback source addresses 127.0.0.1 .. 127.0.0.<count> (default 4)
  --only <list>         bare,farm (default both, bare first)
  --background <count>  load of our own for the whole run, so that runs on a quiet and a busy
                        machine compare: <count> processes spinning on a core each, and one
                        writing 8 MiB and fsyncing it in a loop (default 0: none)
  --profile             CPU profile of each server over the window; its summary goes in the
                        results JSON and the top of it is printed
  --out <file>          results JSON (default bench/results/capacity-<date>.json)
  --quick               --n 2000 --duration 15 --warmup 5
`;

const { values: args } = parseArgs({
  options: {
    n: { type: 'string' },
    duration: { type: 'string' },
    heartbeat: { type: 'string' },
    warmup: { type: 'string' },
    generators: { type: 'string' },
    parallel: { type: 'string' },
    sources: { type: 'string' },
    background: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'boolean' },
    quick: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function intArg(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (!Number.isInteger(v) || v < min) {
    process.stderr.write(`--${name} must be an integer of at least ${min}, got "${value}"\n${HELP}`);
    process.exit(2);
  }
  return v;
}

const quick = args.quick === true;
const N = intArg('n', args.n, quick ? 2000 : 10_000, 1);
const DURATION = intArg('duration', args.duration, quick ? 15 : 60, 1);
const HEARTBEAT = intArg('heartbeat', args.heartbeat, 30, 1);
const WARMUP = intArg('warmup', args.warmup, quick ? 5 : 10, 0);
const GENERATORS = intArg('generators', args.generators, 2, 1);
const PARALLEL = intArg('parallel', args.parallel, 100, 1);
const SOURCES = intArg('sources', args.sources, 4, 1);
const BACKGROUND = intArg('background', args.background, 0, 0);
if (SOURCES > 254) {
  process.stderr.write('--sources must be at most 254\n');
  process.exit(2);
}
const only = (args.only ?? 'bare,farm').split(',').map((s) => s.trim());
for (const o of only) {
  if (o !== 'bare' && o !== 'farm') {
    process.stderr.write(`--only: unknown server "${o}"; expected bare and/or farm\n`);
    process.exit(2);
  }
}
const KINDS = (['bare', 'farm'] as const).filter((k) => only.includes(k));

/** Longest the connect phase of one server may take. */
const CONNECT_TIMEOUT_MS = Math.max(120_000, N * 30);
/** Longest the whole run may take before everything is killed. */
const RUN_DEADLINE_MS = KINDS.length * (CONNECT_TIMEOUT_MS + (WARMUP + DURATION) * 1000 + 180_000);

const KB = 1024;
const MB = 1024 * 1024;

const HERE = dirname(fileURLToPath(import.meta.url));
const SERVER_SCRIPT = join(HERE, 'capacity-server.ts');
const CLIENTS_SCRIPT = join(HERE, 'capacity-clients.ts');
const children = new Set<ChildProcess>();

function spawnChild(script: string, env: Record<string, string>, gc: boolean): ChildProcess {
  const proc = fork(script, [], {
    execArgv: [...(gc ? ['--expose-gc'] : []), '--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

/** --background: CPU spinners and a disk writer that fsyncs, all killed with the other children. */
function startBackground(): void {
  const spin = 'for (;;) {}';
  const disk = `const fs = require('node:fs'); const b = Buffer.alloc(1 << 20, 1);
const fd = fs.openSync(process.argv[1], 'w');
for (;;) { for (let i = 0; i < 8; i++) fs.writeSync(fd, b, 0, b.length, i * b.length); fs.fsyncSync(fd); }`;
  const run = (code: string, ...argv: string[]) => {
    const proc = spawn(process.execPath, ['-e', code, ...argv], { stdio: 'ignore' });
    children.add(proc);
    proc.once('exit', () => children.delete(proc));
  };
  for (let i = 0; i < BACKGROUND; i++) run(spin);
  run(disk, backgroundFile);
}

function killAll(): void {
  for (const p of children) p.kill('SIGKILL');
}

/** A server under test, with request/reply over its IPC channel. */
class ServerChild {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  readonly ready: Promise<Extract<ServerMessage, { type: 'ready' }>>;
  private exited = false;

  constructor(readonly proc: ChildProcess) {
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server child not ready within 60 s')), 60_000);
      proc.on('message', (raw) => {
        const m = raw as ServerMessage;
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(m);
          return;
        }
        const w = this.waiting.get(m.id);
        if (!w) return;
        this.waiting.delete(m.id);
        if (m.ok) w.resolve(m.value);
        else w.reject(new Error(`server child: ${m.error}`));
      });
      proc.once('exit', (code) => {
        this.exited = true;
        clearTimeout(timer);
        const err = new Error(`server child exited with code ${code}`);
        reject(err);
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
      });
    });
  }

  request<T>(
    req: ServerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never,
    timeoutMs = 60_000,
  ): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`server child: ${req.cmd} timed out`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send({ ...req, id } as ServerRequest);
    });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    try {
      await this.request({ cmd: 'stop' }, 60_000);
    } catch {
      // Killed below.
    }
    const left = await Promise.race([gone.then(() => true), sleep(10_000).then(() => false)]);
    if (!left) this.proc.kill('SIGKILL');
  }
}

/** A load-generator process. */
class Generator {
  registered = 0;
  failed = 0;
  private waiters: ((m: ClientsMessage) => boolean)[] = [];
  private exited = false;

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (raw) => {
      const m = raw as ClientsMessage;
      if (m.type === 'progress') {
        this.registered = m.registered;
        this.failed = m.failed;
      }
      this.waiters = this.waiters.filter((w) => !w(m));
    });
    proc.once('exit', () => {
      this.exited = true;
    });
  }

  send(req: ClientsRequest): void {
    this.proc.send(req);
  }

  /** The next message of `type`, or an error after `timeoutMs`. */
  next<T extends ClientsMessage['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<ClientsMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`load generator: no ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (m: ClientsMessage) => {
        if (m.type !== type) return false;
        clearTimeout(timer);
        resolve(m as Extract<ClientsMessage, { type: T }>);
        return true;
      };
      this.waiters.push(waiter);
    });
  }

  async counters(): Promise<ClientsCounters> {
    const reply = this.next('counters', 30_000);
    this.send({ cmd: 'counters' });
    return (await reply).counters;
  }

  async stop(): Promise<ClientsCounters | null> {
    if (this.exited) return null;
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    const last = this.next('counters', 30_000).catch(() => null);
    this.send({ cmd: 'stop' });
    const counters = await last;
    const left = await Promise.race([gone.then(() => true), sleep(10_000).then(() => false)]);
    if (!left) this.proc.kill('SIGKILL');
    return counters?.counters ?? null;
  }
}

interface Result {
  server: ServerKind;
  n: number;
  ok: boolean;
  problems: string[];
  connected: number;
  connectSeconds: number;
  baseline: MemorySample;
  loaded: MemorySample;
  /** Memory with half the connections held (heartbeats going on). */
  half: MemorySample;
  halfHeld: number;
  /** Bytes per connection: (loaded - baseline) / connections held. */
  perConnection: { rss: number; heapUsed: number; external: number };
  /**
   * Bytes per connection from the second half alone: (loaded - half) / (held - halfHeld).
   * Costs that do not grow with connections (a young generation grown by the connect phase's
   * allocations, compiled code) cancel out.
   */
  marginal: { rss: number; heapUsed: number; external: number };
  connectLoop: ServerStats['loop'];
  window: ServerStats;
  /** Server CPU over the window, % of one core. */
  cpuPercent: number;
  heartbeatsPerSec: number;
  acksInWindow: number;
  expectedAcks: number;
  /** Load generators' CPU over the window, % of one core (all of them). */
  generatorCpuPercent: number;
  /** With --profile: the server's CPU profile over the window, summarised. */
  profile?: ProfileSummary | undefined;
}

function sum(cs: ClientsCounters[], key: keyof Omit<ClientsCounters, 'problems'>): number {
  return cs.reduce((s, c) => s + c[key], 0);
}

function medianSample(samples: MemorySample[]): MemorySample {
  const pick = (k: keyof MemorySample) => median(samples.map((s) => s[k]));
  return {
    rss: pick('rss'),
    heapUsed: pick('heapUsed'),
    heapTotal: pick('heapTotal'),
    external: pick('external'),
    arrayBuffers: pick('arrayBuffers'),
  };
}

/**
 * Memory after a full collection, once it has settled: V8 gives freed heap pages back to
 * the system some seconds after a collection, not at once. One sample a second, each after
 * a full collection, until three in a row agree within 1 MB (at least `minSamples`, at most
 * 30); the median of the last three.
 */
async function settledMemory(server: ServerChild, minSamples: number): Promise<MemorySample> {
  const samples: MemorySample[] = [];
  const near = (a: MemorySample, b: MemorySample) =>
    Math.abs(a.rss - b.rss) <= MB && Math.abs(a.heapTotal - b.heapTotal) <= MB;
  for (let i = 0; i < 30; i++) {
    samples.push(await server.request<MemorySample>({ cmd: 'memory', gc: true }));
    const [a, b, c] = samples.slice(-3);
    if (samples.length >= minSamples && a && b && c && near(a, b) && near(b, c)) break;
    await sleep(1000);
  }
  return medianSample(samples.slice(-3));
}

async function runOne(kind: ServerKind): Promise<Result> {
  const server = new ServerChild(
    spawnChild(SERVER_SCRIPT, { CAP_KIND: kind, CAP_MAX_CLIENTS: String(N + 100) }, true),
  );
  const gens: Generator[] = [];
  const problems: string[] = [];
  try {
    const ready = await server.ready;
    // The idle server, settled: what the connections add is measured from here.
    const baseline = await settledMemory(server, 8);

    const sources = Array.from({ length: SOURCES }, (_, i) => `127.0.0.${i + 1}`);
    const share = Math.ceil(N / GENERATORS);
    for (let g = 0; g < GENERATORS && g * share < N; g++) {
      gens.push(new Generator(spawnChild(CLIENTS_SCRIPT, {}, false)));
    }
    // Started (tsx compiles them) before the clock of the connect phase starts.
    await Promise.all(gens.map((gen) => gen.next('ready', 60_000)));
    const counts = gens.map((_, g) => Math.min(share, N - g * share));

    /** Opens each generator's connections up to `fraction` of its share, with a progress bar. */
    const connect = async (fraction: number, label: string): Promise<ClientsCounters[]> => {
      const from = gens.reduce((s, g) => s + g.registered + g.failed, 0);
      for (const [g, gen] of gens.entries()) {
        gen.send({
          cmd: 'connect',
          wsUrl: ready.wsUrl,
          token: ready.token,
          first: g * share,
          count: counts[g] as number,
          total: N,
          parallel: PARALLEL,
          sources,
          heartbeatMs: HEARTBEAT * 1000,
          timeoutMs: CONNECT_TIMEOUT_MS,
          upTo: Math.round((counts[g] as number) * fraction),
        });
      }
      const bar = new cliProgress.SingleBar(
        {
          format: `${kind.padEnd(4)} ${label} |{bar}| {value}/{total} registered, {failed} failed, {rate}/s`,
          hideCursor: true,
          // Without a terminal (CI, a log file): a line every 10 s instead of a redrawn bar.
          noTTYOutput: true,
          notTTYSchedule: 10_000,
        },
        cliProgress.Presets.shades_classic,
      );
      const t0 = performance.now();
      bar.start(N, from, { failed: 0, rate: 0 });
      const update = () => {
        const registered = gens.reduce((s, g) => s + g.registered, 0);
        const failed = gens.reduce((s, g) => s + g.failed, 0);
        const rate = Math.round((registered + failed - from) / ((performance.now() - t0) / 1000));
        bar.update(registered, { failed, rate });
      };
      const ticker = setInterval(update, 250);
      try {
        return await Promise.all(
          gens.map(async (g) => (await g.next('connected', CONNECT_TIMEOUT_MS + 70_000)).counters),
        );
      } finally {
        clearInterval(ticker);
        update();
        bar.stop();
        connectSeconds += (performance.now() - t0) / 1000;
      }
    };
    let connectSeconds = 0;

    // Half the connections, heartbeats going, memory settled: the first point of the slope.
    await connect(0.5, 'connecting 1/2');
    const beatAt = Date.now() + 500;
    for (const g of gens) g.send({ cmd: 'beat', at: beatAt });
    await sleep(500 + WARMUP * 1000);
    const half = await settledMemory(server, 5);
    const halfHeld = (await server.request<ServerStats>({ cmd: 'stats' })).connections;

    // All of them.
    await server.request({ cmd: 'window-start' });
    const connectedCounters = await connect(1, 'connecting 2/2');
    const registered = sum(connectedCounters, 'registered');
    if (registered < N) {
      problems.push(`${registered} of ${N} workers registered`);
      for (const c of connectedCounters) problems.push(...c.problems.slice(0, 5));
    }
    const connectStats = await server.request<ServerStats>({ cmd: 'stats' });
    await sleep(WARMUP * 1000);

    const before = await Promise.all(gens.map((g) => g.counters()));
    // Starting the profiler stalls the loop for a moment: before the window, not in it.
    if (args.profile) await server.request({ cmd: 'profile-start' });
    await server.request({ cmd: 'window-start' });
    const windowBar = new cliProgress.SingleBar(
      {
        format: `${kind.padEnd(4)} steady     |{bar}| {value}/{total} s`,
        hideCursor: true,
        noTTYOutput: true,
        notTTYSchedule: 10_000,
      },
      cliProgress.Presets.shades_classic,
    );
    windowBar.start(DURATION, 0);
    for (let s = 1; s <= DURATION; s++) {
      await sleep(1000);
      windowBar.update(s);
    }
    windowBar.stop();
    const window = await server.request<ServerStats>({ cmd: 'stats' });
    const after = await Promise.all(gens.map((g) => g.counters()));
    let profile: ProfileSummary | undefined;
    if (args.profile) {
      const file = join(tmpdir(), `capacity-${kind}-${process.pid}.cpuprofile`);
      await server.request({ cmd: 'profile-stop', file }, 120_000);
      profile = summariseProfile(file, 25);
      rmSync(file, { force: true });
    }

    // Memory with the connections held (heartbeats going on), settled.
    const loaded = await settledMemory(server, 5);
    const final = await server.request<ServerStats>({ cmd: 'stats' });

    const acksInWindow = sum(after, 'acks') - sum(before, 'acks');
    const sentInWindow = sum(after, 'heartbeatsSent') - sum(before, 'heartbeatsSent');
    const expectedAcks = Math.round((registered * DURATION) / HEARTBEAT);
    const dropped = sum(after, 'dropped');
    const errors = sum(after, 'errors');
    if (dropped > 0) problems.push(`${dropped} connections dropped`);
    if (errors > 0) problems.push(`${errors} error frames`);
    if (dropped + errors > 0) for (const c of after) problems.push(...c.problems.slice(0, 5));
    // A heartbeat sent near the window's end may be acknowledged after it: allow 2 %.
    if (acksInWindow < 0.98 * expectedAcks)
      problems.push(`${acksInWindow} heartbeats acknowledged in the window, expected about ${expectedAcks}`);
    if (final.connections !== registered)
      problems.push(`server holds ${final.connections} connections, ${registered} registered`);

    const held = final.connections > 0 ? final.connections : registered;
    const slope = (k: keyof MemorySample) => (loaded[k] - half[k]) / (held - halfHeld);
    const genCpu = sum(after, 'cpu') - sum(before, 'cpu');
    return {
      server: kind,
      n: N,
      ok: problems.length === 0,
      problems,
      connected: registered,
      connectSeconds,
      baseline,
      loaded,
      half,
      halfHeld,
      perConnection: {
        rss: (loaded.rss - baseline.rss) / held,
        heapUsed: (loaded.heapUsed - baseline.heapUsed) / held,
        external: (loaded.external - baseline.external) / held,
      },
      marginal: { rss: slope('rss'), heapUsed: slope('heapUsed'), external: slope('external') },
      connectLoop: connectStats.loop,
      window,
      cpuPercent: (100 * (window.cpu.user + window.cpu.system)) / window.wall,
      heartbeatsPerSec: sentInWindow / window.wall,
      acksInWindow,
      expectedAcks,
      generatorCpuPercent: (100 * genCpu) / window.wall,
      profile,
    };
  } finally {
    await server.stop();
    await Promise.all(gens.map((g) => g.stop()));
  }
}

// ---- report --------------------------------------------------------------------------

const f1 = (x: number) => x.toFixed(1);
const f0 = (x: number) => x.toFixed(0);

function table(results: Result[]): string {
  const head =
    '| server | connections | connect time | RSS idle -> half -> all | RSS / conn | heap / conn | RSS / conn, 2nd half | heap / conn, 2nd half | CPU, % of a core | heartbeats/s | loop delay p50 / p99 / max | loop p99 while connecting |';
  const rows = results.map((r) =>
    [
      r.server === 'farm' ? 'AI Farm (SQLite)' : 'bare `ws`',
      r.connected,
      `${f0(r.connectSeconds)} s`,
      `${f0(r.baseline.rss / MB)} -> ${f0(r.half.rss / MB)} -> ${f0(r.loaded.rss / MB)} MB`,
      `${f1(r.perConnection.rss / KB)} KB`,
      `${f1(r.perConnection.heapUsed / KB)} KB`,
      `${f1(r.marginal.rss / KB)} KB`,
      `${f1(r.marginal.heapUsed / KB)} KB`,
      f1(r.cpuPercent),
      f0(r.heartbeatsPerSec),
      `${f1(r.window.loop.p50)} / ${f1(r.window.loop.p99)} / ${f1(r.window.loop.max)} ms`,
      `${f1(r.connectLoop.p99)} ms`,
    ].join(' | '),
  );
  return [head, `|${' --- |'.repeat(12)}`, ...rows.map((r) => `| ${r} |`)].join('\n');
}

function goals(results: Result[]): string[] {
  const farm = results.find((r) => r.server === 'farm');
  const bare = results.find((r) => r.server === 'bare');
  const out: string[] = [];
  if (farm && bare) {
    const extra = (farm.perConnection.rss - bare.perConnection.rss) / KB;
    const extraHeap = (farm.perConnection.heapUsed - bare.perConnection.heapUsed) / KB;
    const marginal = (farm.marginal.rss - bare.marginal.rss) / KB;
    out.push(
      `At most 16 KB per connection beyond the bare server: ${extra <= 16 ? 'met' : 'NOT met'} — ` +
        `${f1(extra)} KB RSS (${f1(extraHeap)} KB heap); second half alone ${f1(marginal)} KB RSS`,
    );
  }
  if (farm) {
    out.push(
      `Event-loop p99 at most 20 ms: ${farm.window.loop.p99 <= 20 ? 'met' : 'NOT met'} — ${f1(farm.window.loop.p99)} ms`,
    );
  }
  return out;
}

const deadline = setTimeout(() => {
  process.stderr.write(`run deadline of ${RUN_DEADLINE_MS / 1000} s passed: killing everything\n`);
  killAll();
  process.exit(1);
}, RUN_DEADLINE_MS);
process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});

const started = new Date();
const backgroundFile = join(tmpdir(), `capacity-background-${process.pid}.bin`);
if (BACKGROUND > 0) startBackground();
const load = [loadavg()];
const results: Result[] = [];
let failed = false;
try {
  for (const kind of KINDS) {
    results.push(await runOne(kind));
    load.push(loadavg());
  }
} catch (err) {
  failed = true;
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
} finally {
  clearTimeout(deadline);
  killAll();
  rmSync(backgroundFile, { force: true });
}

let commit = 'unknown';
try {
  commit =
    process.env.BENCH_COMMIT ??
    execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: HERE, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
} catch {
  // Not a git checkout.
}
const out =
  args.out ??
  join(HERE, 'results', `capacity-${started.toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
mkdirSync(dirname(out), { recursive: true });
const settings = {
  n: N,
  duration: DURATION,
  heartbeat: HEARTBEAT,
  warmup: WARMUP,
  generators: GENERATORS,
  parallel: PARALLEL,
  sources: SOURCES,
  background: BACKGROUND,
};
writeFileSync(
  out,
  `${JSON.stringify(
    {
      started: started.toISOString(),
      commit,
      node: process.version,
      cpus: cpus().length,
      loadavg: load,
      settings,
      results,
      goals: goals(results),
    },
    null,
    2,
  )}\n`,
);

const lines = [
  '',
  `${started.toISOString()}  commit ${commit}  node ${process.version}  ${cpus().length} CPUs`,
  `load average (1/5/15 min) at start and after each server: ${load.map((l) => l.map((x) => x.toFixed(1)).join('/')).join(', ')}`,
  `settings: ${JSON.stringify(settings)}`,
  '',
  table(results),
  '',
  ...goals(results).map((g) => `- ${g}`),
  ...results.flatMap((r) => (r.ok ? [] : [`- ${r.server}: problems: ${r.problems.join('; ')}`])),
  ...results.flatMap((r) => [
    `- ${r.server}: GC in the window: ${r.window.gc.minor.count} minor (${f0(r.window.gc.minor.ms)} ms, longest ${f0(r.window.gc.minor.max)}), ${r.window.gc.major.count} major (${f0(r.window.gc.major.ms)} ms, longest ${f0(r.window.gc.major.max)}); stalls over 200 ms [s into window, ms]: ${JSON.stringify(r.window.stalls)}`,
  ]),
  ...results.flatMap((r) =>
    r.profile
      ? [
          '',
          `${r.server}: CPU profile over the window (${f0(r.profile.totalMs)} ms sampled), by area:`,
          ...r.profile.areas.slice(0, 12).map((a) => `  ${f1(a.pct).padStart(5)} %  ${a.area}`),
          'inclusive, own functions:',
          ...r.profile.inclusive
            .slice(0, 15)
            .map((a) => `  ${f1(a.pct).padStart(5)} %  ${a.name}  ${a.where}`),
        ]
      : [],
  ),
  '',
  `results: ${relative(process.cwd(), out)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
process.exit(failed || results.some((r) => !r.ok) ? 1 : 0);
