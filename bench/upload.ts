/**
 * Upload benchmark (issue 4, point 8): a 1 GB float32 update PUT to a real server over loopback
 * (streamed to disk, hashed, header checked first, NaN/Inf scanned, journaled), against the raw
 * loopback TCP throughput of the same bytes from the same file (a socket that discards them).
 * The sender is a child process piping the file into a node:http request or a socket; the server's peak RSS beyond its baseline is
 * sampled while the upload runs (constant memory: it must not grow with the upload).
 *
 *   npx tsx bench/upload.ts            # 1 GiB
 *   npx tsx bench/upload.ts --mb 256
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateToken } from '../src/auth/token-service.js';
import { loadConfig } from '../src/config/load.js';
import { startServer } from '../src/main.js';
import { buildHeader } from '../src/training/safetensors/encode.js';
import { registeredClient } from '../test/helpers/ws-client.js';

const args = process.argv.slice(2);
const mbArg = args.indexOf('--mb');
const MB = mbArg >= 0 ? Number(args[mbArg + 1]) : 1024;
const elements = Math.floor((MB * 2 ** 20) / 4);
const gbps = (bytes: number, ms: number) => bytes / 1e9 / (ms / 1000);

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
): Promise<{ ms: number; status?: number; body?: string }> {
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
s.on('data', () => { console.log(JSON.stringify({ ms: performance.now() - t0 })); s.destroy(); });
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
  res.on('end', () => console.log(JSON.stringify({ ms: performance.now() - t0, status: res.statusCode, body })));
});
createReadStream(process.env.FILE, { highWaterMark: 1 << 20 }).pipe(req);
`;

function sampleRss(): { stop: () => number } {
  const base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  return {
    stop: () => {
      clearInterval(t);
      return Math.max(peak, process.memoryUsage().rss) - base;
    },
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-bench-upload-'));
  try {
    const file = join(dir, 'update.safetensors');
    const bytes = await writeModel(file);
    console.log(
      `update: ${(bytes / 2 ** 20).toFixed(0)} MiB; load ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} on ${cpus().length} CPUs`,
    );

    // Raw loopback TCP: a socket that discards everything, then answers one byte.
    let received = 0;
    const sink = createServer((sock) => {
      sock.on('data', (d: Buffer) => {
        received += d.length;
        if (received >= bytes) sock.end('k');
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const tcpMem = sampleRss();
    const tcp = await child(TCP_SENDER, { FILE: file, PORT: String((sink.address() as AddressInfo).port) });
    const tcpPeak = tcpMem.stop();
    sink.close();

    const admin = generateToken();
    const cfg = loadConfig({
      env: {},
      flags: {
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: 0,
        WEBSOCKET_PORT: 0,
        MODEL_SERVER_PORT: 0,
        DATABASE_URL: join(dir, 'db.sqlite'),
        DATA_DIR: join(dir, 'data'),
        LOG_DIR: join(dir, 'logs'),
        MODEL_CACHE_DIR: join(dir, 'models'),
        CHECKPOINT_DIR: join(dir, 'checkpoints'),
        RATE_LIMIT: 'off',
        LOG_LEVEL: 'warn',
        ADMIN_TOKEN: admin,
      },
    });
    if (!cfg.ok) throw new Error(cfg.errors.join('\n'));
    const server = await startServer(cfg.config);
    try {
      const api = async (method: string, path: string, body?: unknown) => {
        const res = await fetch(server.httpUrl + path, {
          method,
          headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return (await res.json()) as Record<string, unknown>;
      };
      const worker = (await api('POST', '/api/tokens', { name: 'bench', role: 'worker' })).token as string;
      const client = await registeredClient(server.wsUrl, worker, 'bench-uploader');
      // Two ranks, one uploading, and a strategy without a running sum: the round stays open and
      // nothing but the upload itself runs while it is measured.
      const other = await registeredClient(server.wsUrl, worker, 'bench-other');
      const task = await api('POST', '/api/tasks', {
        type: 'command',
        requirements: {},
        world_size: 2,
        config: { rounds: 1, aggregation: { strategy: 'median' } },
      });
      const msg = await client.type('task');
      const data = msg.data as { id: number; attempt: number; rank: number };
      const url = `${server.httpUrl}/api/tasks/${data.id}/rounds/1/updates/${data.rank}?attempt=${data.attempt}&num_samples=1`;
      global.gc?.();
      const mem = sampleRss();
      const up = await child(HTTP_SENDER, { FILE: file, URL: url, TOKEN: worker, CLIENT: 'bench-uploader' });
      const peak = mem.stop();
      if (up.status !== 201) throw new Error(`upload answered ${up.status}: ${up.body}`);
      await api('PUT', `/api/tasks/${String(task.id)}/status`, { status: 'cancelled' });
      await client.type('stop');
      client.close();
      other.close();
      const ratio = gbps(bytes, up.ms) / gbps(bytes, tcp.ms);
      const rows = [
        ['method', 'throughput', 'time', 'receiver peak RSS beyond baseline'],
        ['---', '---', '---', '---'],
        [
          'raw loopback TCP (discarded)',
          `${gbps(bytes, tcp.ms).toFixed(2)} GB/s`,
          `${(tcp.ms / 1000).toFixed(2)} s`,
          `${(tcpPeak / 2 ** 20).toFixed(0)} MiB`,
        ],
        [
          'AI Farm PUT (to disk, sha256, header + NaN/Inf checks, journal)',
          `${gbps(bytes, up.ms).toFixed(2)} GB/s`,
          `${(up.ms / 1000).toFixed(2)} s`,
          `${(peak / 2 ** 20).toFixed(0)} MiB`,
        ],
      ];
      console.log(rows.map((r) => `| ${r.join(' | ')} |`).join('\n'));
      console.log(
        `\nupload / raw TCP = ${ratio.toFixed(2)} (goal >= 0.5: ${ratio >= 0.5 ? 'met' : 'NOT met'})`,
      );
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
