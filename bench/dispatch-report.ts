/**
 * What bench/dispatch.ts reports: a line per run as it ends, the runs of a group summarised
 * (medians, ratio to BullMQ, CPU per task), the markdown table of docs/benchmarks.md and the
 * profiled runs' CPU profiles and SQL statements.
 */
import { relative } from 'node:path';
import type { BullmqResult } from './bullmq-run.js';
import { median, type CreateMode } from './common.js';
import type { ProfileSummary } from './cpuprofile.js';
import type { FarmResult } from './farm-run.js';

export type RunResult = FarmResult | BullmqResult;
export type Group = 'rounds' | 'paced' | CreateMode | 'profile';

function modeOf(r: RunResult): string {
  if (r.system === 'bullmq') return r.rate ? `add @${r.rate}/s` : 'addBulk';
  return r.rate ? `${r.mode} @${r.rate}/s` : r.mode;
}

export function describe(r: RunResult): string {
  const flag = r.ok ? 'ok' : `PROBLEMS: ${r.problems.join('; ')}`;
  const drain =
    r.system !== 'bullmq' && r.drainTasksPerSec ? ` drain ${r.drainTasksPerSec.toFixed(0)}/s` : '';
  return (
    `${r.system.padEnd(6)} ${modeOf(r).padEnd(14)} n=${r.n} ${r.tasksPerSec.toFixed(0).padStart(6)} tasks/s ` +
    `p50 ${r.latencyMs.p50.toFixed(0)} ms p99 ${r.latencyMs.p99.toFixed(0)} ms (${r.seconds.toFixed(2)} s)${drain} ${flag}`
  );
}

export interface Summary {
  group: Group;
  system: string;
  mode: string;
  n: number;
  runs: number;
  tasksPerSec: number;
  tasksPerSecRange: [number, number];
  ratioToBullmq: number | null;
  p50: number;
  p99: number;
  createsPerSec: number | null;
  drainTasksPerSec: number | null;
  serverCpuMsPerTask: number | null;
  dbCpuMsPerTask: number | null;
  allOk: boolean;
}

const round2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : null);
const whole = (x: number) => (Number.isFinite(x) ? Math.round(x) : null);
const cpuMs = (c: { user: number; system: number } | null, n: number) =>
  c ? ((c.user + c.system) * 1000) / n : Number.NaN;

export function summarise(group: Group, rs: RunResult[], bullmqTps: number | null): Summary | null {
  const first = rs[0];
  if (!first) return null;
  const tps = rs.map((r) => r.tasksPerSec);
  const t = median(tps);
  const farmRuns = rs.filter((r): r is FarmResult => r.system !== 'bullmq');
  const bullRuns = rs.filter((r): r is BullmqResult => r.system === 'bullmq');
  const drains = farmRuns.map((r) => r.drainTasksPerSec ?? Number.NaN);
  return {
    group,
    system: first.system,
    mode: group === 'profile' ? `${modeOf(first)}, profiled` : modeOf(first),
    n: first.n,
    runs: rs.length,
    tasksPerSec: whole(t) ?? Number.NaN,
    tasksPerSecRange: [whole(Math.min(...tps)) ?? Number.NaN, whole(Math.max(...tps)) ?? Number.NaN],
    ratioToBullmq: bullmqTps ? round2(t / bullmqTps) : null,
    p50: whole(median(rs.map((r) => r.latencyMs.p50))) ?? Number.NaN,
    p99: whole(median(rs.map((r) => r.latencyMs.p99))) ?? Number.NaN,
    createsPerSec: farmRuns.length ? whole(median(farmRuns.map((r) => r.createsPerSec))) : null,
    drainTasksPerSec: whole(median(drains)),
    serverCpuMsPerTask: round2(
      median([
        ...farmRuns.map((r) => cpuMs(r.cpu.server, r.n)),
        ...bullRuns.map((r) => cpuMs(r.cpu.driver, r.n)),
      ]),
    ),
    dbCpuMsPerTask: round2(
      median([
        ...farmRuns.map((r) => cpuMs(r.cpu.database, r.n)),
        ...bullRuns.map((r) => cpuMs(r.cpu.redis, r.n)),
      ]),
    ),
    allOk: rs.every((r) => r.ok),
  };
}

export function table(rows: Summary[]): string {
  const label: Record<string, string> = {
    sqlite: 'AI Farm, SQLite',
    mysql: 'AI Farm, MariaDB',
    bullmq: 'BullMQ, Redis',
  };
  const head = [
    'system',
    'created by',
    'N',
    'runs',
    'tasks/s (median)',
    'min-max',
    'x BullMQ',
    'p50 ms',
    'p99 ms',
    'creates/s',
    'drain/s',
    'server CPU ms/task',
    'DB CPU ms/task',
    'checks',
  ];
  const dash = (v: number | null) => (v === null || Number.isNaN(v) ? '-' : String(v));
  const body = rows.map((s) => [
    label[s.system] ?? s.system,
    s.mode,
    String(s.n),
    String(s.runs),
    dash(s.tasksPerSec),
    `${dash(s.tasksPerSecRange[0])}-${dash(s.tasksPerSecRange[1])}`,
    s.group === 'paced' || s.group === 'profile' ? '-' : dash(s.ratioToBullmq),
    dash(s.p50),
    dash(s.p99),
    dash(s.createsPerSec),
    dash(s.drainTasksPerSec),
    dash(s.serverCpuMsPerTask),
    dash(s.dbCpuMsPerTask),
    s.allOk ? 'ok' : 'FAILED',
  ]);
  return [head, head.map(() => '---'), ...body].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

export function printProfile(p: FarmResult & { summary: ProfileSummary | null }): void {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`Profile of the server, AI Farm on ${p.system} (${relative(process.cwd(), p.profile ?? '')}):`);
  if (p.summary) {
    const areas = p.summary.areas.slice(0, 12).map((a) => `${a.area} ${a.pct}%`);
    out(`  self time by area: ${areas.join(', ')}`);
    out('  top self time:');
    for (const f of p.summary.functions.slice(0, 20))
      out(`    ${String(f.pct).padStart(5)}%  ${f.name}  ${f.where}`);
    out('  AI Farm functions, inclusive:');
    for (const f of p.summary.inclusive.slice(0, 20))
      out(`    ${String(f.pct).padStart(5)}%  ${f.name}  ${f.where}`);
  }
  if (p.sql) {
    const per = (x: number) => (x / p.n).toFixed(2);
    out(`  SQL: ${per(p.sql.total)} statements and ${per(p.sql.transactions)} transactions per task`);
    const us = (ms: number) => ((ms * 1000) / p.n).toFixed(1);
    const byTime = [...p.sql.statements].sort((a, b) => b.ms - a.ms || b.count - a.count);
    if (byTime[0]?.ms) out(`  (SQLite: by time executing, µs per task)`);
    for (const s of byTime.slice(0, 16))
      out(`    ${per(s.count).padStart(6)}/task ${s.ms ? `${us(s.ms).padStart(6)} µs` : ''}  ${s.sql}`);
  }
}
