/**
 * What bench/aggregation.ts reports: a measured contender, a goal checked on it, and the
 * markdown table of docs/benchmarks.md.
 */

export const gb = (bytes: number) => bytes / 1e9;
export const mib = (bytes: number) => bytes / 2 ** 20;

/** One measured contender. */
export interface Row {
  n: number;
  method: string;
  /** Bytes of update files aggregated per second, output written (fsync, sha256) included. */
  bytesPerSecond: number;
  /** FedAvg: bytes of update files added to the sum per second (the adds alone, before the finish). */
  foldBytesPerSecond?: number;
  /** FedAvg: the session's start-up (threads, kernels, the sum's pages), before the timed part. */
  startSeconds?: number;
  seconds: number;
  /**
   * Bytes of update files aggregated per CPU-second (user + system time of every thread): what
   * the work costs, much less sensitive than wall time to other load on the machine.
   */
  bytesPerCpuSecond: number;
  peakBeyondBaseline: number;
  /** Peak beyond baseline in sizes of the model as aggregated (F32 or BF16 bytes). */
  peakModels: number;
  loopP99Ms?: number;
  check: string;
}

/** A goal of issue 4 or 15, checked at one N. */
export interface Goal {
  n: number;
  goal: string;
  met: boolean;
  value: number;
}

/** The rows as a markdown table, each aggregation rate also as a fraction of numpy's read bandwidth. */
export function resultsTable(rows: Row[], npBandwidth: number): string {
  const head = [
    'N',
    'method',
    'aggregated',
    'folded (adds alone)',
    'per CPU-second',
    "of numpy's read bw",
    'peak RSS beyond baseline',
    'loop p99',
    'time',
    'start-up',
    'result',
  ];
  return [
    head,
    head.map(() => '---'),
    ...rows.map((r) => [
      String(r.n),
      r.method,
      `${gb(r.bytesPerSecond).toFixed(2)} GB/s`,
      r.foldBytesPerSecond === undefined ? '-' : `${gb(r.foldBytesPerSecond).toFixed(2)} GB/s`,
      `${gb(r.bytesPerCpuSecond).toFixed(2)} GB`,
      `${(r.bytesPerSecond / npBandwidth).toFixed(2)}x`,
      `${mib(r.peakBeyondBaseline).toFixed(0)} MiB (${r.peakModels.toFixed(2)} models)`,
      r.loopP99Ms === undefined ? '-' : `${r.loopP99Ms.toFixed(1)} ms`,
      `${r.seconds.toFixed(2)} s`,
      r.startSeconds === undefined ? '-' : `${r.startSeconds.toFixed(2)} s`,
      r.check,
    ]),
  ]
    .map((r) => `| ${r.join(' | ')} |`)
    .join('\n');
}
