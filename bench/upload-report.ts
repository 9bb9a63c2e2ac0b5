/**
 * What bench/upload.ts reports: the markdown table of docs/benchmarks.md, the goal lines (issue
 * 15: a 1 GiB upload at least 0.9x raw loopback TCP) and one JSON object with every figure.
 */
import type { Measure } from './upload.js';

/** One folder's measures, per run. */
export interface FolderRows {
  dir: string;
  rows: {
    /** The discarding socket. */
    tcp: Measure;
    /** The raw receiver writing to the folder (4 MiB writes, fsync). */
    disk: Measure;
    /** Rank 0 of the round (onto pages the raw receiver just freed), then rank 1 (fresh pages). */
    puts: Measure[];
    /** A new file written in the folder, no network, after the uploads. */
    alone: Measure;
  }[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
/** GB/s of `bytes` moved in `ms`. */
export const gbps = (bytes: number, ms: number) => bytes / 1e9 / (ms / 1000);

function summary(bytes: number, ms: Measure[]) {
  const t = median(ms.map((m) => m.ms));
  return {
    gbps: gbps(bytes, t),
    ms: t,
    receiver_cpu_ms: median(ms.map((m) => m.cpuMs)),
    sender_cpu_ms: median(ms.map((m) => m.senderCpuMs)),
    peak_rss_beyond_baseline_bytes: Math.max(...ms.map((m) => m.peak)),
  };
}

/** Prints the table, the goal lines and (with `json`) the JSON line. */
export function report(
  bytes: number,
  runs: number,
  folders: FolderRows[],
  json: boolean,
  meta: object,
): void {
  const line = (name: string, ms: Measure[]) => {
    const s = summary(bytes, ms);
    const sender = Number.isFinite(s.sender_cpu_ms) && s.sender_cpu_ms > 0;
    return [
      name,
      `${s.gbps.toFixed(2)} GB/s`,
      `${(s.ms / 1000).toFixed(2)} s`,
      `${(s.receiver_cpu_ms / 1000).toFixed(2)} s`,
      sender ? `${(s.sender_cpu_ms / 1000).toFixed(2)} s` : '-',
      `${(s.peak_rss_beyond_baseline_bytes / 2 ** 20).toFixed(0)} MiB`,
    ];
  };
  const tcps = folders.flatMap((f) => f.rows.map((r) => r.tcp));
  const table = [
    [
      'method',
      'throughput (median)',
      'time',
      'receiver CPU',
      'sender CPU',
      'receiver peak RSS beyond baseline (max)',
    ],
    ['---', '---', '---', '---', '---', '---'],
    line('raw loopback TCP (discarded)', tcps),
  ];
  const tcpMs = median(tcps.map((m) => m.ms));
  const out = {
    bench: 'upload',
    bytes,
    runs,
    ...meta,
    raw_tcp: summary(bytes, tcps),
    folders: [] as object[],
  };
  const goals: string[] = [];
  for (const [i, f] of folders.entries()) {
    // The first upload of the process also starts the check thread: reported apart.
    const ranked = (k: number) =>
      f.rows.flatMap((r, run) => (i === 0 && run === 0 && k === 0 ? [] : [{ put: r.puts[k]!, tcp: r.tcp }]));
    const warm = ranked(0);
    const fresh = ranked(1);
    table.push(
      line(
        `write alone: a new file in ${f.dir}, no network (4 MiB writes, fsync)`,
        f.rows.map((r) => r.alone),
      ),
    );
    table.push(
      line(
        `raw loopback TCP to ${f.dir} (4 MiB writes, fsync)`,
        f.rows.map((r) => r.disk),
      ),
    );
    if (i === 0)
      table.push(
        line(`AI Farm PUT to ${f.dir}, first of the process (starts the check thread)`, [
          f.rows[0]!.puts[0]!,
        ]),
      );
    if (warm.length > 0)
      table.push(
        line(
          `AI Farm PUT to ${f.dir}, rank 0 (pages the raw receiver just freed)`,
          warm.map((w) => w.put),
        ),
      );
    table.push(
      line(
        `AI Farm PUT to ${f.dir}, rank 1 (fresh pages)`,
        fresh.map((w) => w.put),
      ),
    );
    const ratios = (xs: { put: Measure; tcp: Measure }[]) => {
      if (xs.length === 0) return null;
      const paired = xs.map((x) => x.tcp.ms / x.put.ms);
      return {
        over_raw_tcp: tcpMs / median(xs.map((x) => x.put.ms)),
        paired_median: median(paired),
        paired_min: Math.min(...paired),
        paired_max: Math.max(...paired),
      };
    };
    const rw = ratios(warm);
    const rf = ratios(fresh)!;
    out.folders.push({
      dir: f.dir,
      write_alone: summary(
        bytes,
        f.rows.map((r) => r.alone),
      ),
      raw_tcp_to_folder: summary(
        bytes,
        f.rows.map((r) => r.disk),
      ),
      ...(i === 0 ? { first_upload: summary(bytes, [f.rows[0]!.puts[0]!]) } : {}),
      ...(rw
        ? {
            upload_rank0: summary(
              bytes,
              warm.map((w) => w.put),
            ),
            rank0: rw,
          }
        : {}),
      upload_rank1: summary(
        bytes,
        fresh.map((w) => w.put),
      ),
      rank1: rf,
      per_run: f.rows.map((r) => ({
        raw_tcp_gbps: gbps(bytes, r.tcp.ms),
        raw_to_folder_gbps: gbps(bytes, r.disk.ms),
        upload_gbps: r.puts.map((m) => gbps(bytes, m.ms)),
        write_alone_gbps: gbps(bytes, r.alone.ms),
      })),
    });
    const say = (name: string, r: NonNullable<ReturnType<typeof ratios>>) =>
      `${f.dir}, ${name}: upload / raw TCP = ${r.over_raw_tcp.toFixed(2)} (goal >= 0.9: ${r.over_raw_tcp >= 0.9 ? 'met' : 'NOT met'}; ` +
      `each against the raw TCP of its run: median ${r.paired_median.toFixed(2)}, ` +
      `${r.paired_min.toFixed(2)}-${r.paired_max.toFixed(2)})`;
    if (rw) goals.push(say('rank 0', rw));
    goals.push(say('rank 1', rf));
  }
  console.log(table.map((r) => `| ${r.join(' | ')} |`).join('\n'));
  console.log(`\n${goals.join('\n')}`);
  if (json) console.log(JSON.stringify(out));
}
