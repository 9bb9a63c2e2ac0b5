/**
 * Upload benchmark (issues 4 and 15): a 1 GiB float32 update PUT to a real server over loopback
 * (streamed to disk, hashed by pieces, header checked first, NaN/Inf scanned, fsynced, journaled),
 * against the raw loopback TCP throughput of the same bytes from the same file (a socket that
 * discards them), against the same socket writing them to a file and fsyncing it (what the disk
 * allows a durable receiver that checks nothing), and against the folder's own write rate with no
 * network at all ("write alone"). The sender is a child process piping the file into a node:http
 * request or a socket; the receiver's peak RSS beyond its baseline is sampled while each transfer
 * runs (constant memory: it must not grow with the upload), and its CPU time (all threads) and
 * the sender's are measured.
 *
 * Each run, per folder, in this order: the discarding socket; the raw receiver to a file there
 * (deleted after, which frees 1 GiB of page cache); rank 0's PUT (onto the pages just freed);
 * rank 1's PUT (onto fresh pages); write alone (fresh pages too). On this VM freed memory beyond
 * about 1 GiB goes back to the host, and writing fresh pages costs about 2 s per GiB, so rank 1
 * and "write alone" show what storage costs when it is not warm (docs/benchmarks.md).
 *
 * With `--dirs a,b` the server's MODEL_CACHE_DIR and the raw receiver's file live in each
 * folder in turn, within each run (e.g. `/tmp,/dev/shm`: the disk, and tmpfs where fsync costs
 * nothing and O_DIRECT is refused so the buffered path runs), which separates the software's
 * cost from the disk's; the discarding socket is measured next to each folder's uploads.
 *
 *   npx tsx bench/upload.ts                  # 1 GiB, 3 runs, medians, in os.tmpdir()
 *   npx tsx bench/upload.ts --mb 256 --runs 1
 *   npx tsx bench/upload.ts --dirs /tmp,/dev/shm   # disk and tmpfs side by side
 *   npx tsx bench/upload.ts --json           # also one JSON object (last line) with every figure
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateToken } from '../src/auth/token-service.js';
import { testConfig } from '../test/helpers/server.js';
import { startServer } from '../src/main.js';
import { buildHeader } from '../src/training/safetensors/encode.js';
import { registeredClient } from '../test/helpers/ws-client.js';
import { buildWasm } from '../scripts/build-wasm.js';
import { gbps, report, type FolderRows } from './upload-report.js';

const args = process.argv.slice(2);
const mbArg = args.indexOf('--mb');
const MB = mbArg >= 0 ? Number(args[mbArg + 1]) : 1024;
const runsArg = args.indexOf('--runs');
const RUNS = runsArg >= 0 ? Number(args[runsArg + 1]) : 3;
/** Only the uploads (for profiling them: `node --cpu-prof --import tsx bench/upload.ts --uploads-only`). */
const UPLOADS_ONLY = args.includes('--uploads-only');
/** Print, after the tables, one line of JSON with the same figures (for scripts). */
const JSON_OUT = args.includes('--json');
/** Folders for the server's MODEL_CACHE_DIR and the raw receiver's file (`--dir x` or `--dirs x,y`). */
const dirsArg = Math.max(args.indexOf('--dirs'), args.indexOf('--dir'));
const DIRS = dirsArg >= 0 ? args[dirsArg + 1]!.split(',').filter((d) => d !== '') : [tmpdir()];
const elements = Math.floor((MB * 2 ** 20) / 4);

async function writeModel(path: string): Promise<number> {
  const { prefix, header } = buildHeader([{ name: 'w', dtype: 'F32', shape: [elements] }]);
  const fh = await open(path, 'w');
  const chunk = new Float32Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i % 97) * 0.01;
  try {
    await fh.write(prefix);
    for (let done = 0; done < elements; done += chunk.length) {
      const n = Math.min(chunk.length, elements - done);
      await fh.write(new Uint8Array(chunk.buffer, 0, n * 4));
    }
  } finally {
    await fh.close();
  }
  return header.fileBytes;
}

/** Runs a sender child (ESM source) and returns the JSON line it prints. */
function child(
  source: string,
  env: Record<string, string>,
): Promise<{ ms: number; cpuMs: number; status?: number; body?: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', source], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').pop()!))
        : reject(new Error(`sender exited ${code}`)),
    );
  });
}

const TCP_SENDER = `
import { createReadStream } from 'node:fs';
import { connect } from 'node:net';
const t0 = performance.now();
const s = connect(Number(process.env.PORT), '127.0.0.1');
createReadStream(process.env.FILE, { highWaterMark: 1 << 20 }).pipe(s);
s.on('data', () => {
  const u = process.cpuUsage();
  console.log(JSON.stringify({ ms: performance.now() - t0, cpuMs: (u.user + u.system) / 1000 }));
  s.destroy();
});
`;

const HTTP_SENDER = `
import { createReadStream, statSync } from 'node:fs';
import { request } from 'node:http';
const t0 = performance.now();
const req = request(process.env.URL, {
  method: 'PUT',
  headers: {
    authorization: 'Bearer ' + process.env.TOKEN,
    'content-type': 'application/octet-stream',
    'content-length': String(statSync(process.env.FILE).size),
    'x-ai-farm-client': process.env.CLIENT,
  },
}, (res) => {
  let body = '';
  res.on('data', (d) => (body += d));
  res.on('end', () => {
    const u = process.cpuUsage();
    console.log(JSON.stringify({ ms: performance.now() - t0, cpuMs: (u.user + u.system) / 1000, status: res.statusCode, body }));
  });
});
createReadStream(process.env.FILE, { highWaterMark: 1 << 20 }).pipe(req);
`;

/** Samples the receiver's RSS and CPU time (all threads) while a transfer runs. */
function sample(): { stop: () => { peak: number; cpuMs: number } } {
  const base = process.memoryUsage().rss;
  const cpu0 = process.cpuUsage();
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  return {
    stop: () => {
      clearInterval(t);
      const cpu = process.cpuUsage(cpu0);
      return {
        peak: Math.max(peak, process.memoryUsage().rss) - base,
        cpuMs: (cpu.user + cpu.system) / 1000,
      };
    },
  };
}

/** One measured write: wall time, the receiver's CPU (all threads) and peak RSS, the sender's CPU. */
export interface Measure {
  ms: number;
  peak: number;
  cpuMs: number;
  senderCpuMs: number;
}

/** A transfer not measured (--uploads-only). */
const NONE: Measure = { ms: NaN, peak: 0, cpuMs: NaN, senderCpuMs: NaN };

/**
 * The folder's own write rate, no network: a new file of `bytes` written as the raw receiver
 * writes (4 MiB writes, writeback every 64 MiB, fsync), then deleted. Measured right after the
 * uploads, whose files are still there: its pages are ones the process has not just freed.
 */
async function writeAlone(path: string, bytes: number): Promise<Measure> {
  const piece = Buffer.alloc(4 << 20, 1);
  const s = sample();
  const t0 = performance.now();
  const fh = await open(path, 'w');
  try {
    for (let at = 0, unsynced = 0; at < bytes; at += piece.length) {
      const n = Math.min(piece.length, bytes - at);
      await fh.write(piece, 0, n, at);
      unsynced += n;
      if (unsynced >= 64 << 20) {
        unsynced = 0;
        await fh.datasync();
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  const ms = performance.now() - t0;
  await unlink(path);
  return { ms, ...s.stop(), senderCpuMs: 0 };
}

/** Raw loopback TCP into a socket that discards the bytes (`disk`: writes and fsyncs them). */
async function rawTcp(file: string, bytes: number, disk: string | null): Promise<Measure> {
  const fh = disk === null ? null : await open(disk, 'w');
  let received = 0;
  const sink = createServer({ allowHalfOpen: true }, (sock) => {
    // The same as the upload path minus its checks: 4 MiB writes, writeback started every 64 MiB.
    const piece = Buffer.allocUnsafe(4 << 20);
    let fill = 0;
    let at = 0;
    let chain = Promise.resolve();
    let queued = 0;
    let unsynced = 0;
    let syncing: Promise<void> | null = null;
    const flush = () => {
      const copy = Buffer.from(piece.subarray(0, fill));
      const pos = at;
      at += fill;
      fill = 0;
      // At most four pieces waiting (constant memory, as the upload path).
      if (++queued >= 4) sock.pause();
      chain = chain.then(async () => {
        await fh!.write(copy, 0, copy.length, pos);
        if (--queued < 4) sock.resume();
        unsynced += copy.length;
        if (unsynced >= 64 << 20 && !syncing) {
          unsynced = 0;
          syncing = fh!.datasync().finally(() => (syncing = null));
        }
      });
    };
    sock.on('data', (d: Buffer) => {
      received += d.length;
      if (fh) {
        for (let off = 0; off < d.length;) {
          const n = Math.min(d.length - off, piece.length - fill);
          d.copy(piece, fill, off, off + n);
          fill += n;
          off += n;
          if (fill === piece.length) flush();
        }
      }
      if (received >= bytes) {
        if (fh && fill > 0) flush();
        void chain
          .then(() => syncing)
          .then(() => fh?.sync())
          .then(() => sock.end('k'));
      }
    });
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const s = sample();
  const r = await child(TCP_SENDER, { FILE: file, PORT: String((sink.address() as AddressInfo).port) });
  const m = s.stop();
  sink.close();
  if (fh) {
    await fh.close();
    await unlink(disk!);
  }
  return { ms: r.ms, ...m, senderCpuMs: r.cpuMs };
}

/** One folder under test: its server (MODEL_CACHE_DIR there) and its scratch folder. */
interface Target {
  dir: string;
  scratch: string;
  server: Awaited<ReturnType<typeof startServer>>;
  api: (method: string, path: string, body?: unknown) => Promise<Record<string, unknown>>;
  worker: string;
  /** Per run: the discarding socket, the raw receiver to a file here, and the two uploads. */
  rows: FolderRows['rows'];
}

async function startTarget(dir: string, scratch: string, index: number): Promise<Target> {
  mkdirSync(dir, { recursive: true });
  const here = mkdtempSync(join(dir, 'aifarm-bench-upload-'));
  const admin = generateToken();
  // The database and logs stay in one place for every folder: only the update files move.
  const config = testConfig(
    { url: join(scratch, `db-${index}.sqlite`), dir: scratch },
    {
      DATA_DIR: join(scratch, `data-${index}`),
      LOG_DIR: join(scratch, `logs-${index}`),
      MODEL_CACHE_DIR: join(here, 'models'),
      CHECKPOINT_DIR: join(here, 'checkpoints'),
      LOG_LEVEL: 'warn',
      ADMIN_TOKEN: admin,
    },
  );
  const server = await startServer(config);
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(server.httpUrl + path, {
      method,
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return (await res.json()) as Record<string, unknown>;
  };
  const worker = (await api('POST', '/api/tokens', { name: 'bench', role: 'worker' })).token as string;
  return { dir, scratch: here, server, api, worker, rows: [] };
}

/** Two uploads (ranks 0 and 1 of a three-rank round) to `t`'s server, measured one by one. */
async function uploadTwice(
  t: Target,
  file: string,
  bytes: number,
  tag: string,
): Promise<{ puts: Measure[]; alone: Measure }> {
  // Three ranks, two uploading one after the other, and a strategy without a running sum:
  // the round stays open and nothing but the uploads runs while they are measured.
  const clients = await Promise.all(
    [0, 1, 2].map((k) => registeredClient(t.server.wsUrl, t.worker, `bench-${tag}-${k}`)),
  );
  const task = await t.api('POST', '/api/tasks', {
    type: 'command',
    requirements: {},
    world_size: 3,
    config: { rounds: 1, aggregation: { strategy: 'median' } },
  });
  const puts: Measure[] = [];
  for (const k of [0, 1]) {
    const msg = await clients[k]!.type('task');
    const data = msg.data as { id: number; attempt: number; rank: number };
    const url = `${t.server.httpUrl}/api/tasks/${data.id}/rounds/1/updates/${data.rank}?attempt=${data.attempt}&num_samples=1`;
    global.gc?.();
    const s = sample();
    const up = await child(HTTP_SENDER, {
      FILE: file,
      URL: url,
      TOKEN: t.worker,
      CLIENT: `bench-${tag}-${k}`,
    });
    const m = s.stop();
    if (up.status !== 201) throw new Error(`upload answered ${up.status}: ${up.body}`);
    puts.push({ ms: up.ms, ...m, senderCpuMs: up.cpuMs });
  }
  // Before the uploads' files are deleted: on pages the process has not just freed, as rank 1's.
  const alone = UPLOADS_ONLY ? NONE : await writeAlone(join(t.scratch, 'alone.bin'), bytes);
  await t.api('PUT', `/api/tasks/${String(task.id)}/status`, { status: 'cancelled' });
  for (const c of clients) c.close();
  // The accepted updates stay in MODEL_CACHE_DIR after a cancel: 2 GiB a run, in memory on tmpfs.
  rmSync(join(t.scratch, 'models', `task-${String(task.id)}`), { recursive: true, force: true });
  return { puts, alone };
}

async function main(): Promise<void> {
  // The WebAssembly kernels, assembled from their .wat sources (a few milliseconds).
  await buildWasm();
  const scratch = mkdtempSync(join(tmpdir(), 'aifarm-bench-upload-'));
  const targets: Target[] = [];
  try {
    const file = join(scratch, 'update.safetensors');
    const bytes = await writeModel(file);
    console.log(
      `update: ${(bytes / 2 ** 20).toFixed(0)} MiB; folders ${DIRS.join(', ')}; load ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} on ${cpus().length} CPUs`,
    );
    for (const [i, dir] of DIRS.entries()) targets.push(await startTarget(dir, scratch, i));
    for (let run = 0; run < RUNS; run++) {
      const parts = [`run ${run + 1}`];
      for (const [i, t] of targets.entries()) {
        // The discarding socket next to each folder's uploads: the load changes within a run.
        const tcp = UPLOADS_ONLY ? NONE : await rawTcp(file, bytes, null);
        // Frees the pages of a 1 GiB file just before rank 0's upload: see docs/benchmarks.md.
        const disk = UPLOADS_ONLY ? NONE : await rawTcp(file, bytes, join(t.scratch, 'raw-disk.bin'));
        const { puts, alone } = await uploadTwice(t, file, bytes, `${run}-${i}`);
        t.rows.push({ tcp, disk, puts, alone });
        // GB/s (receiver CPU in s) of each transfer.
        const f = (m: Measure) => `${gbps(bytes, m.ms).toFixed(2)} (${(m.cpuMs / 1000).toFixed(1)})`;
        parts.push(
          `${t.dir}: raw TCP ${f(tcp)}, raw to folder ${f(disk)}, PUT ${puts.map(f).join(' then ')}, ` +
            `write alone ${f(alone)}`,
        );
      }
      console.log(`${parts.join('; ')}; GB/s (receiver CPU s); load ${loadavg()[0]!.toFixed(1)}`);
    }
    report(bytes, RUNS, targets, JSON_OUT, { load: loadavg(), cpus: cpus().length });
  } finally {
    for (const t of targets) {
      await t.server.stop();
      rmSync(t.scratch, { recursive: true, force: true });
    }
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
