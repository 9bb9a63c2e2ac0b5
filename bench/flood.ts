/**
 * Flood within the limits (issue 11, point 5): worker sockets each sending `task_request`
 * just under MAX_MESSAGES_PER_SECOND, with thousands of pending tasks none of them can run,
 * while `GET /health` and `GET /api/tasks?limit=1` are timed. The server is the real
 * composition (src/main.ts startServer) in a child process of its own, on a scratch SQLite
 * or MariaDB database; this process is the workers and the prober. See docs/benchmarks.md.
 *
 *   npx tsx bench/flood.ts                      # SQLite, 4 x 450/s for 3 s, 2,500 tasks
 *   npx tsx bench/flood.ts --dialect mysql --json
 *   npx tsx bench/flood.ts --help
 */
import { fork } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { generateToken } from '../src/auth/token-service.js';
import { startServer } from '../src/main.js';
import type { Dialect } from '../src/storage/db.js';
import { createTestDatabase } from '../test/helpers/db.js';
import { testConfig } from '../test/helpers/server.js';
import { systemInfo } from '../test/helpers/ws-client.js';
import { quantile, sleep } from './common.js';

const HELP = `Usage: npx tsx bench/flood.ts [options]

  --dialect <sqlite|mysql>  database of the server (default sqlite)
  --tasks <count>           pending tasks no worker can run (default 2500)
  --workers <count>         flooding worker sockets (default 4)
  --rate <count>            task_request per second per socket (default 450; the limit is 500)
  --seconds <count>         length of the flood (default 3)
  --json                    print the result as JSON instead of text
`;

interface Child {
  httpUrl: string;
  wsUrl: string;
  adminToken: string;
}

/** The server child: starts, reports its URLs, stops on "stop". */
async function serve(dialect: Dialect): Promise<void> {
  const db = await createTestDatabase(dialect);
  const adminToken = generateToken();
  const server = await startServer(testConfig(db, { ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn' }));
  process.on('message', (m) => {
    // The server's own CPU time: a figure the other processes on the machine do not change.
    if (m === 'cpu') process.send?.({ cpu: process.cpuUsage() });
    if (m !== 'stop') return;
    void server
      .stop()
      .then(() => db.drop())
      .finally(() => process.exit(0));
  });
  process.send?.({ httpUrl: server.httpUrl, wsUrl: server.wsUrl, adminToken } satisfies Child);
}

interface Latencies {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

function summarise(ms: number[]): Latencies {
  const s = [...ms].sort((a, b) => a - b);
  const r = (v: number) => Math.round(v * 10) / 10;
  return { n: s.length, p50: r(quantile(s, 0.5)), p99: r(quantile(s, 0.99)), max: r(s.at(-1) ?? NaN) };
}

/** Times one request after another on `path` until `stop()` is true. */
async function probe(url: string, path: string, token: string, stop: () => boolean): Promise<number[]> {
  const out: number[] = [];
  while (!stop()) {
    const t0 = performance.now();
    const res = await fetch(url + path, { headers: { authorization: `Bearer ${token}` } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status}`);
    out.push(performance.now() - t0);
    await sleep(5);
  }
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the benchmark reads a few fields of JSON answers
async function api(c: Child, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(c.httpUrl + path, {
    method,
    headers: { authorization: `Bearer ${c.adminToken}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status >= 300) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** A registered worker socket that counts the replies to its requests. */
async function worker(c: Child, token: string, id: string) {
  const ws = new WebSocket(c.wsUrl, { headers: { authorization: `Bearer ${token}` } });
  const w = { ws, replies: 0, closeCode: null as number | null };
  ws.on('close', (code) => (w.closeCode = code));
  await new Promise<void>((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', () => ws.send(JSON.stringify({ type: 'register', ...systemInfo(id) })));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string };
      if (m.type === 'registered') resolve();
      else if (m.type === 'no_task' || m.type === 'task') w.replies++;
    });
  });
  return w;
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      dialect: { type: 'string', default: 'sqlite' },
      tasks: { type: 'string', default: '2500' },
      workers: { type: 'string', default: '4' },
      rate: { type: 'string', default: '450' },
      seconds: { type: 'string', default: '3' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
      child: { type: 'boolean', default: false },
    },
  });
  const dialect = args.dialect as Dialect;
  if (dialect !== 'sqlite' && dialect !== 'mysql') throw new Error('--dialect is sqlite or mysql');
  if (args.child) return serve(dialect);
  if (args.help) {
    console.log(HELP);
    return;
  }
  const tasks = Number(args.tasks);
  const workers = Number(args.workers);
  const rate = Number(args.rate);
  const seconds = Number(args.seconds);
  const proc = fork(fileURLToPath(import.meta.url), ['--child', '--dialect', dialect], {
    execArgv: ['--import', 'tsx'],
  });
  try {
    const c = await new Promise<Child>((resolve, reject) => {
      proc.once('message', (m) => resolve(m as Child));
      proc.once('exit', (code) => reject(new Error(`server child exited with ${code}`)));
    });
    const workerToken = (await api(c, 'POST', '/api/tokens', { name: 'flood', role: 'worker' })).token;
    for (let made = 0; made < tasks; made += 1000) {
      const n = Math.min(1000, tasks - made);
      // More RAM than any worker has: every pass finds nothing to place.
      const batch = Array.from({ length: n }, () => ({ type: 'flood', requirements: { min_ram_gb: 1e6 } }));
      await api(c, 'POST', '/api/tasks/batch', { tasks: batch });
    }
    const ws = await Promise.all(
      Array.from({ length: workers }, (_, i) => worker(c, workerToken, `flood-${i}`)),
    );
    const loadBefore = loadavg();

    const timed = async (ms: number, during?: () => void) => {
      let done = false;
      const probes = Promise.all([
        probe(c.httpUrl, '/health', c.adminToken, () => done),
        probe(c.httpUrl, '/api/tasks?limit=1', c.adminToken, () => done),
      ]);
      during?.();
      await sleep(ms);
      done = true;
      const [health, read] = await probes;
      return { health: summarise(health), tasks_read: summarise(read) };
    };
    const quiet = await timed(1000);
    const serverCpu = () =>
      new Promise<number>((resolve) => {
        const on = (m: unknown) => {
          const cpu = (m as { cpu?: NodeJS.CpuUsage }).cpu;
          if (!cpu) return;
          proc.off('message', on);
          resolve((cpu.user + cpu.system) / 1000);
        };
        proc.on('message', on);
        proc.send('cpu');
      });
    const cpuBefore = await serverCpu();

    // Each socket sends its requests spread over each 10 ms tick (rate / 100 per tick).
    let sent = 0;
    let timer: NodeJS.Timeout | null = null;
    const floodStarted = performance.now();
    const flood = await timed(seconds * 1000, () => {
      timer = setInterval(() => {
        const due = Math.floor(((performance.now() - floodStarted) / 1000) * rate);
        for (; sent < due; sent++) {
          for (const w of ws) w.ws.send(JSON.stringify({ type: 'task_request' }));
        }
      }, 10);
    });
    if (timer) clearInterval(timer);
    // The replies still on their way: bounded wait.
    const until = Date.now() + 30_000;
    while (ws.some((w) => w.replies < sent && w.closeCode === null) && Date.now() < until) await sleep(20);
    const floodCpuMs = (await serverCpu()) - cpuBefore;
    const after = await timed(500);
    const result = {
      dialect,
      tasks,
      workers,
      rate_per_worker: rate,
      seconds,
      requests_sent: sent * workers,
      replies: ws.reduce((n, w) => n + w.replies, 0),
      closed: ws.filter((w) => w.closeCode !== null).map((w) => w.closeCode),
      /** Server CPU time from the start of the flood to its last reply (probes included). */
      server_cpu_ms: Math.round(floodCpuMs),
      server_cpu_us_per_request: Math.round((floodCpuMs * 1000) / Math.max(1, sent * workers)),
      quiet,
      flood,
      after,
      load_before: loadBefore.map((l) => Math.round(l * 100) / 100),
      load_after: loadavg().map((l) => Math.round(l * 100) / 100),
    };
    for (const w of ws) w.ws.close(1000);
    if (args.json) console.log(JSON.stringify(result, null, 2));
    else {
      const line = (name: string, l: Latencies) =>
        `  ${name.padEnd(22)} n=${l.n}  p50 ${l.p50} ms  p99 ${l.p99} ms  max ${l.max} ms`;
      console.log(
        [
          `flood on ${dialect}: ${workers} sockets x ${rate} task_request/s for ${seconds} s, ${tasks} pending tasks none can run`,
          `  requests sent ${result.requests_sent}, replies ${result.replies}, sockets closed: ${result.closed.join(', ') || 'none'}`,
          `  server CPU during the flood: ${result.server_cpu_ms} ms (${result.server_cpu_us_per_request} µs per request)`,
          `  quiet:`,
          line('GET /health', quiet.health),
          line('GET /api/tasks?limit=1', quiet.tasks_read),
          `  during the flood:`,
          line('GET /health', flood.health),
          line('GET /api/tasks?limit=1', flood.tasks_read),
          `  load average before ${result.load_before.join(' ')}, after ${result.load_after.join(' ')}`,
        ].join('\n'),
      );
    }
  } finally {
    proc.send('stop');
    await new Promise((r) => proc.once('exit', r));
  }
}

await main();
