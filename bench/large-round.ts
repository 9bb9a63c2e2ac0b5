/**
 * A one-billion-parameter round on this machine (issue 15, point 4): a real server (SQLite, in
 * this process) and 4 simulated ranks, each a child process uploading a 1B-parameter BF16
 * update (2 GB) through the real HTTP path with the reference worker's resumable (tus) upload;
 * rank 0's connection is cut in the middle and resumed from the server's offset. The round
 * aggregates (FedAvg, the running float32 sum), and every rank downloads the new global model.
 * Per phase: wall time, bytes sent again after the cut, the server process's peak RSS beyond
 * its baseline, and its event-loop delay p99; next to it what holding the round's updates
 * costs the Flower way (N x model). Every file is deleted at the end.
 *
 *   npx tsx bench/large-round.ts                    # 1e9 parameters (4 x 2 GB, ~10 GB of disk)
 *   npx tsx bench/large-round.ts --params 1e8       # a tenth, to check it quickly
 *   npx tsx bench/large-round.ts --dir /var/tmp --json
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { generateToken } from '../src/auth/token-service.js';
import { startServer } from '../src/main.js';
import { buildHeader } from '../src/training/safetensors/encode.js';
import { testConfig } from '../test/helpers/server.js';
import { registeredClient } from '../test/helpers/ws-client.js';
import { buildWasm } from '../scripts/build-wasm.js';

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const PARAMS = Math.round(Number(arg('--params') ?? 1e9));
const RANKS = Number(arg('--ranks') ?? 4);
const DIR = arg('--dir') ?? tmpdir();
const JSON_OUT = args.includes('--json');
/** Tensors the parameters are spread over (a model's layers; each below 2^31 bytes). */
const TENSORS = 16;

/** Writes a BF16 safetensors file of PARAMS values (finite, varied) in 4 MiB writes. */
async function writeUpdate(path: string): Promise<number> {
  const per = Math.floor(PARAMS / TENSORS);
  const sizes = Array.from({ length: TENSORS }, (_, i) =>
    i === TENSORS - 1 ? PARAMS - per * (TENSORS - 1) : per,
  );
  const { prefix, header } = buildHeader(
    sizes.map((n, i) => ({ name: `layer${i}.weight`, dtype: 'BF16', shape: [n] })),
  );
  const chunk = new Uint16Array(2 * 1024 * 1024);
  // bf16 of values in [0.5, 1): exponent 0x3f0, varied mantissas.
  for (let i = 0; i < chunk.length; i++) chunk[i] = 0x3f00 | (i % 128);
  const fh = await open(path, 'w');
  try {
    await fh.write(prefix);
    for (let left = PARAMS; left > 0;) {
      const n = Math.min(chunk.length, left);
      await fh.write(new Uint8Array(chunk.buffer, 0, n * 2));
      left -= n;
    }
  } finally {
    await fh.close();
  }
  return header.fileBytes;
}

/** Runs one rank's child (bench/large-round-rank.ts) and returns its JSON line. */
function rank(env: Record<string, string>): Promise<Record<string, number | null>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'large-round-rank.ts')], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').pop()!))
        : reject(new Error(`rank exited ${code}`)),
    );
  });
}

/** Measures the server process while `fn` runs: wall time, peak RSS beyond baseline, event-loop p99. */
async function phase<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; ms: number; peakRss: number; loopP99Ms: number }> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const t0 = performance.now();
  try {
    const result = await fn();
    return {
      result,
      ms: performance.now() - t0,
      peakRss: Math.max(peak, process.memoryUsage().rss) - base,
      loopP99Ms: loop.percentile(99) / 1e6,
    };
  } finally {
    clearInterval(t);
    loop.disable();
  }
}

async function main(): Promise<void> {
  // The WebAssembly kernels, assembled from their .wat sources (a few milliseconds).
  await buildWasm();
  const scratch = mkdtempSync(join(DIR, 'aifarm-bench-large-'));
  const admin = generateToken();
  const server = await startServer(
    testConfig(
      { url: join(scratch, 'db.sqlite'), dir: scratch },
      { ADMIN_TOKEN: admin, LOG_LEVEL: 'warn', CONNECTION_TIMEOUT: 3600, MAX_UPLOAD_BYTES: 8 * 2 ** 30 },
    ),
  );
  const clients: Awaited<ReturnType<typeof registeredClient>>[] = [];
  try {
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(server.httpUrl + path, {
        method,
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await res.json()) as Record<string, unknown>;
    };
    const file = join(scratch, 'update.safetensors');
    const bytes = await writeUpdate(file);
    const load0 = loadavg();
    console.log(
      `${RANKS} ranks x ${PARAMS.toExponential(2)} BF16 parameters (${(bytes / 1e9).toFixed(2)} GB each) in ${DIR}; ` +
        `load ${load0.map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} CPUs`,
    );
    const worker = (await api('POST', '/api/tokens', { name: 'bench', role: 'worker' })).token as string;
    for (let k = 0; k < RANKS; k++) clients.push(await registeredClient(server.wsUrl, worker, `large-${k}`));
    const task = await api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: RANKS,
      config: { rounds: 1, round_deadline_s: 86400 },
    });
    const leases = await Promise.all(
      clients.map(async (c, k) => {
        const m = await c.type('task', 60_000);
        const d = m.data as { id: number; attempt: number; rank: number; training: { upload_url: string } };
        return { k, rank: d.rank, attempt: d.attempt, url: d.training.upload_url.split('?')[0]! };
      }),
    );
    const cutAt = Math.floor(bytes / 2);
    // Phase 1: every rank uploads at once; rank 0's connection is cut at half its bytes.
    const up = await phase(() =>
      Promise.all(
        leases.map((l) =>
          rank({
            MODE: 'upload',
            SERVER: server.httpUrl,
            TOKEN: worker,
            FILE: file,
            URL: l.url,
            ATTEMPT: String(l.attempt),
            CLIENT: `large-${l.k}`,
            ...(l.rank === 0 ? { CUT_AT: String(cutAt) } : {}),
          }),
        ),
      ),
    );
    const cutRank = up.result[leases.findIndex((l) => l.rank === 0)]!;
    const sentAgain = (cutRank.sent ?? 0) - bytes;
    // Phase 2: the round closes (FedAvg of the last update, the new model written).
    const agg = await phase(async () => {
      for (let i = 0; i < 36_000; i++) {
        const t = await api('GET', `/api/tasks/${String(task.id)}`);
        if (t.status === 'completed') return t;
        if (t.status === 'failed') throw new Error(`the task failed: ${JSON.stringify(t)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the round did not close within an hour');
    });
    // Phase 3: every rank downloads the new global model.
    const down = await phase(() =>
      Promise.all(
        leases.map((l) =>
          rank({
            MODE: 'download',
            SERVER: server.httpUrl,
            TOKEN: worker,
            URL: `/api/tasks/${String(task.id)}/model`,
            FILE: join(scratch, `download-${l.k}.safetensors`),
          }),
        ),
      ),
    );
    const modelBytes = (await stat(join(scratch, 'download-0.safetensors'))).size;
    const load1 = loadavg();
    const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    const rows = [
      ['phase', 'wall time', 'throughput', 'server peak RSS beyond baseline', 'event-loop p99', 'notes'],
      ['---', '---', '---', '---', '---', '---'],
      [
        `upload (${RANKS} x ${gb(bytes)} at once, rank 0 cut at ${gb(cutAt)})`,
        `${(up.ms / 1000).toFixed(1)} s`,
        `${((RANKS * bytes) / 1e9 / (up.ms / 1000)).toFixed(2)} GB/s`,
        mib(up.peakRss),
        `${up.loopP99Ms.toFixed(1)} ms`,
        `rank 0 resumed ${String(cutRank.resumed)}x, sent ${mib(sentAgain)} again`,
      ],
      [
        'aggregate (close the round)',
        `${(agg.ms / 1000).toFixed(1)} s`,
        '',
        mib(agg.peakRss),
        `${agg.loopP99Ms.toFixed(1)} ms`,
        '',
      ],
      [
        `download (${RANKS} x ${gb(modelBytes)} at once)`,
        `${(down.ms / 1000).toFixed(1)} s`,
        `${((RANKS * modelBytes) / 1e9 / (down.ms / 1000)).toFixed(2)} GB/s`,
        mib(down.peakRss),
        `${down.loopP99Ms.toFixed(1)} ms`,
        '',
      ],
    ];
    console.log(rows.map((r) => `| ${r.join(' | ')} |`).join('\n'));
    const flower = RANKS * bytes;
    console.log(
      `\nHolding this round the Flower way (every update in memory): N x model = ${gb(flower)} as BF16, ` +
        `${gb(2 * flower)} as float32 (numpy), plus the scaled copies; AI Farm's peak beyond baseline above. ` +
        `Load after: ${load1.map((l) => l.toFixed(1)).join(' ')}.`,
    );
    if (JSON_OUT) {
      const p = (x: { ms: number; peakRss: number; loopP99Ms: number }) => ({
        ms: x.ms,
        peak_rss_beyond_baseline_bytes: x.peakRss,
        event_loop_p99_ms: x.loopP99Ms,
      });
      console.log(
        JSON.stringify({
          bench: 'large-round',
          params: PARAMS,
          ranks: RANKS,
          update_bytes: bytes,
          model_bytes: modelBytes,
          load_before: load0,
          load_after: load1,
          cpus: cpus().length,
          upload: {
            ...p(up),
            cut_at: cutAt,
            resumed: cutRank.resumed,
            bytes_sent_again: sentAgain,
            ranks: up.result,
          },
          aggregate: p(agg),
          download: { ...p(down), ranks: down.result },
          flower_memory_bytes: { bf16: flower, float32: 2 * flower },
        }),
      );
    }
  } finally {
    for (const c of clients) c.close();
    await server.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
