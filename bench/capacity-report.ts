/**
 * What bench/capacity.ts reports: one server's result, the markdown table of
 * docs/benchmarks.md, the goals of issue 6, the results JSON and the summary it prints.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, relative } from 'node:path';
import type { MemorySample, ServerKind, ServerStats } from './capacity-common.js';
import type { ProfileSummary } from './cpuprofile.js';

const KB = 1024;
const MB = 1024 * 1024;

export interface Result {
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

/** The run around the results: when, on what, how loaded, with which settings. */
export interface RunInfo {
  started: Date;
  commit: string;
  /** Load averages (1/5/15 min) at the start and after each server. */
  load: number[][];
  settings: Record<string, number>;
}

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

/** Writes the results JSON to `out`. */
export function writeResults(out: string, run: RunInfo, results: Result[]): void {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        started: run.started.toISOString(),
        commit: run.commit,
        node: process.version,
        cpus: cpus().length,
        loadavg: run.load,
        settings: run.settings,
        results,
        goals: goals(results),
      },
      null,
      2,
    )}\n`,
  );
}

/** The summary printed at the end: the table, the goals, problems, GC, stalls and profiles. */
export function summaryLines(out: string, run: RunInfo, results: Result[]): string[] {
  const { started, commit, load, settings } = run;
  return [
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
}
