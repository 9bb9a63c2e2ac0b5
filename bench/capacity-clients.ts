/**
 * A load generator of the connection capacity benchmark, as a child process of
 * bench/capacity.ts: opens its share of the simulated workers (real WebSocket connections,
 * `parallel` attempts in flight, spread over loopback source addresses), registers each
 * with the protocol, and on `beat` sends each a heartbeat every `heartbeatMs`, the whole
 * run's connections spread evenly over the interval. The same code drives both servers.
 */
import WebSocket from 'ws';
import type { ClientsCounters, ClientsMessage, ClientsRequest } from './capacity-common.js';

type Connect = Extract<ClientsRequest, { cmd: 'connect' }>;

const sockets: (WebSocket | null)[] = [];
const c: ClientsCounters = {
  open: 0,
  registered: 0,
  failed: 0,
  dropped: 0,
  heartbeatsSent: 0,
  acks: 0,
  errors: 0,
  problems: [],
  cpu: 0,
};
let job: Connect | null = null;
/** The next local index to open. */
let next = 0;
let beater: NodeJS.Timeout | null = null;
let stopping = false;

function send(m: ClientsMessage): void {
  process.send?.(m);
}

function problem(text: string): void {
  if (c.problems.length < 10) c.problems.push(text);
}

function counters(): ClientsCounters {
  const u = process.cpuUsage();
  return { ...c, problems: [...c.problems], cpu: (u.user + u.system) / 1e6 };
}

/** What the reference worker registers with (the original client's system-info shape). */
function register(id: string): string {
  return JSON.stringify({
    type: 'register',
    msg_id: 'reg',
    id,
    hostname: `cap-${id}`,
    platform: { system: 'Linux', release: '6.1', version: '#1', machine: 'x86_64', processor: 'x86_64' },
    cpu: {
      brand: 'Bench CPU',
      cores_physical: 8,
      cores_logical: 16,
      frequency: { current: 3000, min: 800, max: 4000 },
      usage_percent: 1,
    },
    ram: { total: 32 * 2 ** 30, available: 16 * 2 ** 30, used: 16 * 2 ** 30, percent: 50 },
    gpu: null,
    session: { created_at: new Date().toISOString(), total_tasks_completed: 0, performance_metrics: {} },
  });
}

/** Opens one connection and registers it; resolves false when that failed. */
function open(j: Connect, index: number): Promise<boolean> {
  const global = j.first + index;
  const id = `cap${String(global).padStart(5, '0')}`;
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean, why?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (ok) c.registered++;
      else {
        c.failed++;
        if (why) problem(`${id}: ${why}`);
        ws.terminate();
      }
      resolve(ok);
    };
    const ws = new WebSocket(j.wsUrl, {
      headers: j.token ? { authorization: `Bearer ${j.token}` } : {},
      perMessageDeflate: false,
      handshakeTimeout: 30_000,
      localAddress: j.sources[global % j.sources.length],
    });
    const timer = setTimeout(() => done(false, 'not registered within 60 s'), 60_000);
    ws.on('error', (err) => done(false, err.message));
    ws.on('unexpected-response', (_req, res) => done(false, `HTTP ${res.statusCode}`));
    ws.on('open', () => {
      c.open++;
      ws.send(register(id));
    });
    ws.on('close', (code, reason) => {
      if (settled && !stopping) {
        c.dropped++;
        problem(`${id}: closed ${code} ${reason.toString()}`);
      }
      done(false, `closed ${code} ${reason.toString()}`);
    });
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString('utf8')) as { type?: string; code?: string; message?: string };
      if (m.type === 'heartbeat_ack') c.acks++;
      else if (m.type === 'registered') {
        sockets[index] = ws;
        done(true);
      } else if (m.type === 'error') {
        c.errors++;
        problem(`${id}: ${m.code}: ${m.message}`);
      }
    });
  });
}

async function connectAll(req: Connect): Promise<void> {
  if (!job) {
    job = req;
    sockets.length = req.count;
    sockets.fill(null);
  }
  const j = job;
  const upTo = Math.min(req.upTo, j.count);
  const from = next;
  const deadline = Date.now() + j.timeoutMs;
  const lane = async () => {
    while (next < upTo && Date.now() < deadline && !stopping) await open(j, next++);
  };
  const progress = setInterval(
    () => send({ type: 'progress', registered: c.registered, failed: c.failed }),
    250,
  );
  await Promise.all(Array.from({ length: Math.min(j.parallel, upTo - from) }, lane));
  clearInterval(progress);
  if (next < upTo) problem(`${upTo - next} connections not tried: connect phase timed out`);
  send({ type: 'progress', registered: c.registered, failed: c.failed });
  send({ type: 'connected', counters: counters() });
}

/**
 * Heartbeats from `at` (epoch ms): connection g of the run beats at at + g/total * H + k*H.
 * This generator's connections are consecutive in g, so its beats come in index order
 * round after round; one 20 ms ticker sends those that are due.
 */
function beat(at: number): void {
  const j = job;
  if (!j) return;
  const H = j.heartbeatMs;
  let seq = 0;
  const dueAt = (s: number) => {
    const round = Math.floor(s / j.count);
    const g = j.first + (s % j.count);
    return at + round * H + (g / j.total) * H;
  };
  const tick = () => {
    const now = Date.now();
    while (dueAt(seq) <= now) {
      const ws = sockets[seq % j.count];
      seq++;
      if (!ws || ws.readyState !== WebSocket.OPEN) continue;
      c.heartbeatsSent++;
      ws.send(
        JSON.stringify({
          type: 'heartbeat',
          msg_id: `hb${seq}`,
          timestamp: now / 1000,
          utilization: { cpu_utilization: 12.5, ram_utilization: 40.1 },
        }),
      );
    }
  };
  beater = setInterval(tick, 20);
}

async function stop(): Promise<void> {
  stopping = true;
  if (beater) clearInterval(beater);
  for (const ws of sockets) ws?.terminate();
  send({ type: 'counters', counters: counters() });
  send({ type: 'stopped' });
  setImmediate(() => process.exit(0));
}

process.on('message', (raw) => {
  const req = raw as ClientsRequest;
  switch (req.cmd) {
    case 'connect':
      void connectAll(req);
      return;
    case 'beat':
      beat(req.at);
      return;
    case 'counters':
      send({ type: 'counters', counters: counters() });
      return;
    case 'stop':
      void stop();
      return;
  }
});
send({ type: 'ready' });
// The driver gone: nobody will stop us.
process.on('disconnect', () => {
  for (const ws of sockets) ws?.terminate();
  process.exit(1);
});
