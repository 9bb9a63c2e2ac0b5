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
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import type { ClientsCounters, MemorySample, ServerKind, ServerStats } from './capacity-common.js';
import {
  CLIENTS_SCRIPT,
  Generator,
  killAll,
  SERVER_SCRIPT,
  ServerChild,
  settledMemory,
  spawnChild,
  startBackground,
} from './capacity-children.js';
import { summaryLines, writeResults, type Result } from './capacity-report.js';
import { sleep } from './common.js';
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

const HERE = dirname(fileURLToPath(import.meta.url));

function sum(cs: ClientsCounters[], key: keyof Omit<ClientsCounters, 'problems'>): number {
  return cs.reduce((s, c) => s + c[key], 0);
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
if (BACKGROUND > 0) startBackground(BACKGROUND, backgroundFile);
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
const run = {
  started,
  commit,
  load,
  settings: {
    n: N,
    duration: DURATION,
    heartbeat: HEARTBEAT,
    warmup: WARMUP,
    generators: GENERATORS,
    parallel: PARALLEL,
    sources: SOURCES,
    background: BACKGROUND,
  },
};
writeResults(out, run, results);
process.stdout.write(`${summaryLines(out, run, results).join('\n')}\n`);
process.exit(failed || results.some((r) => !r.ok) ? 1 : 0);
