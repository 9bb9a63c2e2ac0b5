/**
 * A server under test in the connection capacity benchmark, as a child process of
 * bench/capacity.ts (run with --expose-gc so memory is sampled after a full collection).
 *
 * CAP_KIND=farm: the real composition (src/main.ts startServer) on a scratch SQLite
 * database, RATE_LIMIT off, MAX_CLIENTS=CAP_MAX_CLIENTS, CONNECTION_TIMEOUT=90 (so the
 * heartbeat_interval it asks for is 30 s), and a worker token for the load generators.
 * CAP_KIND=bare: a plain `ws` server that answers `register` and `heartbeat` with a
 * constant acknowledgement and does nothing else: the floor a WebSocket server costs.
 *
 * Both measure their own event-loop delay (perf_hooks.monitorEventLoopDelay) and CPU and
 * report them, and their memory, to the driver over IPC only.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { findSourceMap } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants as perf, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { WebSocketServer } from 'ws';
import { generateToken, TokenService } from '../src/auth/token-service.js';
import { testConfig } from '../test/helpers/server.js';
import { startServer } from '../src/main.js';
import { systemClock } from '../src/storage/values.js';
import type { MemorySample, ServerMessage, ServerRequest, ServerStats } from './capacity-common.js';

const kind = process.env.CAP_KIND === 'bare' ? 'bare' : 'farm';
const maxClients = Number(process.env.CAP_MAX_CLIENTS ?? '20000');
/** Same limit for both servers: the farm's MAX_MESSAGE_BYTES default. */
const MAX_PAYLOAD = 1024 * 1024;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

function send(m: ServerMessage): void {
  process.send?.(m);
}

/**
 * The histogram records the time between ticks of a timer of this period, so a loop that is
 * never late records the period itself: the delay is a value minus the period.
 */
const RESOLUTION_MS = 10;
const loop = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
loop.enable();
let windowCpu = process.cpuUsage();
let windowAt = performance.now();

// Where long delays come from: garbage collections, and when the loop stalled.
let gcs = { minor: { count: 0, ms: 0, max: 0 }, major: { count: 0, ms: 0, max: 0 } };
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as { detail?: { kind?: number } }).detail?.kind;
    const g = kind === perf.NODE_PERFORMANCE_GC_MAJOR ? gcs.major : gcs.minor;
    g.count++;
    g.ms += e.duration;
    g.max = Math.max(g.max, e.duration);
  }
});
gcObserver.observe({ entryTypes: ['gc'] });
/** Stalls of the loop longer than STALL_MS: [seconds into the window, ms]. */
const STALL_MS = 200;
let stalls: [number, number][] = [];
let lastTick = performance.now();
const stallWatch = setInterval(() => {
  const t = performance.now();
  if (t - lastTick > 50 + STALL_MS && stalls.length < 100)
    stalls.push([Math.round((lastTick - windowAt) / 100) / 10, Math.round(t - lastTick - 50)]);
  lastTick = t;
}, 50);

interface Running {
  wsUrl: string;
  token: string | null;
  connections(): number;
  stop(): Promise<void>;
}

async function startFarm(): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-capacity-'));
  const config = testConfig(
    { url: join(dir, 'capacity.sqlite'), dir },
    {
      LOG_LEVEL: 'info',
      MAX_CLIENTS: maxClients,
      // Every simulated worker shares one token and one address (loopback).
      MAX_CONNECTIONS_PER_TOKEN: maxClients,
      MAX_CONNECTIONS_PER_ADDRESS: maxClients,
      CONNECTION_TIMEOUT: 90,
      ADMIN_TOKEN: generateToken(),
    },
  );
  const server = await startServer(config).catch((err: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  const worker = await new TokenService(server.database.db, systemClock).create(
    'capacity-workers',
    'worker',
    'bench',
  );
  // The gateway is not exported by RunningServer; the connected clients are in its metrics.
  let connections = 0;
  const refresh = async () => {
    const { body } = await server.services.monitoring.prometheus();
    const m = /^aifarm_connected_clients(?:\{[^}]*\})? (\d+)/m.exec(body);
    connections = m ? Number(m[1]) : -1;
  };
  return {
    wsUrl: server.wsUrl,
    token: worker.token,
    connections: () => connections,
    stop: async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    ...{ refresh },
  } as Running & { refresh(): Promise<void> };
}

async function startBare(): Promise<Running> {
  const REGISTERED = JSON.stringify({ type: 'registered', heartbeat_interval: 30 });
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    maxPayload: MAX_PAYLOAD,
  });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  wss.on('connection', (ws) => {
    ws.on('error', () => undefined);
    ws.on('message', (data: Buffer) => {
      // The trivial acknowledgement: enough of the message to answer it, nothing kept.
      let type: unknown;
      try {
        type = (JSON.parse(data.toString('utf8')) as { type?: unknown }).type;
      } catch {
        return;
      }
      if (type === 'heartbeat') ws.send('{"type":"heartbeat_ack"}');
      else if (type === 'register') ws.send(REGISTERED);
    });
  });
  const port = (wss.address() as { port: number }).port;
  return {
    wsUrl: `ws://127.0.0.1:${port}`,
    token: 'bare-server-ignores-it',
    connections: () => wss.clients.size,
    stop: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

const running = kind === 'farm' ? await startFarm() : await startBare();

function memory(collect: boolean): MemorySample {
  if (collect) {
    // Twice: objects freed by the first collection's finalizers go in the second.
    gc?.();
    gc?.();
  }
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

async function stats(): Promise<ServerStats> {
  const r = running as Running & { refresh?: () => Promise<void> };
  if (r.refresh) await r.refresh();
  const cpu = process.cpuUsage(windowCpu);
  const ms = (ns: number) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  return {
    connections: running.connections(),
    cpu: { user: cpu.user / 1e6, system: cpu.system / 1e6 },
    wall: (performance.now() - windowAt) / 1000,
    gc: gcs,
    stalls,
    loop: {
      p50: ms(loop.percentile(50)),
      p99: ms(loop.percentile(99)),
      max: ms(loop.max),
      mean: ms(loop.mean),
    },
  };
}

let profiler: Session | null = null;

async function handle(req: ServerRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'profile-start':
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: 500 });
      await profiler.post('Profiler.start');
      return null;
    case 'profile-stop': {
      if (!profiler) throw new Error('profiler not started');
      const { profile } = await profiler.post('Profiler.stop');
      // tsx compiles each module to one line: point the frames back at the TypeScript lines.
      for (const node of profile.nodes) {
        const f = node.callFrame;
        if (!f.url.startsWith('file:') || f.url.includes('/node_modules/')) continue;
        const entry = findSourceMap(f.url)?.findEntry(f.lineNumber, f.columnNumber);
        if (entry && 'originalLine' in entry) {
          f.lineNumber = entry.originalLine;
          f.columnNumber = entry.originalColumn;
        }
      }
      writeFileSync(req.file, JSON.stringify(profile));
      profiler.disconnect();
      profiler = null;
      return req.file;
    }
    case 'memory':
      return memory(req.gc);
    case 'window-start':
      windowCpu = process.cpuUsage();
      windowAt = performance.now();
      loop.reset();
      gcs = { minor: { count: 0, ms: 0, max: 0 }, major: { count: 0, ms: 0, max: 0 } };
      stalls = [];
      return null;
    case 'stats':
      return stats();
    case 'stop':
      loop.disable();
      gcObserver.disconnect();
      clearInterval(stallWatch);
      await running.stop();
      return null;
  }
}

process.on('message', (raw) => {
  const req = raw as ServerRequest;
  handle(req).then(
    (value) => {
      send({ type: 'reply', id: req.id, ok: true, value });
      if (req.cmd === 'stop') setImmediate(() => process.exit(0));
    },
    (err: unknown) =>
      send({
        type: 'reply',
        id: req.id,
        ok: false,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      }),
  );
});
// The driver gone means nobody will ask us to stop: clean up and leave.
process.on('disconnect', () => {
  void running.stop().finally(() => process.exit(1));
});

send({ type: 'ready', wsUrl: running.wsUrl, token: running.token, pid: process.pid });
