/**
 * The child processes of bench/capacity.ts as its driver sees them: the server under test
 * (bench/capacity-server.ts), the load generators (bench/capacity-clients.ts) and the
 * --background load, all killed together when the run ends or fails.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  ClientsCounters,
  ClientsMessage,
  ClientsRequest,
  MemorySample,
  ServerMessage,
  ServerRequest,
} from './capacity-common.js';
import { median, sleep } from './common.js';
import { IpcChild } from './ipc-child.js';

const MB = 1024 * 1024;

const HERE = dirname(fileURLToPath(import.meta.url));
export const SERVER_SCRIPT = join(HERE, 'capacity-server.ts');
export const CLIENTS_SCRIPT = join(HERE, 'capacity-clients.ts');
const children = new Set<ChildProcess>();

export function spawnChild(script: string, env: Record<string, string>, gc: boolean): ChildProcess {
  const proc = fork(script, [], {
    execArgv: [...(gc ? ['--expose-gc'] : []), '--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

/**
 * --background: `spinners` CPU spinners and a disk writer that fsyncs `file`, all killed with
 * the other children.
 */
export function startBackground(spinners: number, file: string): void {
  const spin = 'for (;;) {}';
  const disk = `const fs = require('node:fs'); const b = Buffer.alloc(1 << 20, 1);
const fd = fs.openSync(process.argv[1], 'w');
for (;;) { for (let i = 0; i < 8; i++) fs.writeSync(fd, b, 0, b.length, i * b.length); fs.fsyncSync(fd); }`;
  const run = (code: string, ...argv: string[]) => {
    const proc = spawn(process.execPath, ['-e', code, ...argv], { stdio: 'ignore' });
    children.add(proc);
    proc.once('exit', () => children.delete(proc));
  };
  for (let i = 0; i < spinners; i++) run(spin);
  run(disk, file);
}

export function killAll(): void {
  for (const p of children) p.kill('SIGKILL');
}

/** A server under test, with request/reply over its IPC channel. */
export class ServerChild extends IpcChild<ServerRequest, Extract<ServerMessage, { type: 'ready' }>> {
  constructor(proc: ChildProcess) {
    super(proc, { requestTimeoutMs: 60_000, stopTimeoutMs: 60_000 });
  }
}

/** A load-generator process. */
export class Generator {
  registered = 0;
  failed = 0;
  private waiters: ((m: ClientsMessage) => boolean)[] = [];
  private exited = false;

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (raw) => {
      const m = raw as ClientsMessage;
      if (m.type === 'progress') {
        this.registered = m.registered;
        this.failed = m.failed;
      }
      this.waiters = this.waiters.filter((w) => !w(m));
    });
    proc.once('exit', () => {
      this.exited = true;
    });
  }

  send(req: ClientsRequest): void {
    this.proc.send(req);
  }

  /** The next message of `type`, or an error after `timeoutMs`. */
  next<T extends ClientsMessage['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<ClientsMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`load generator: no ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (m: ClientsMessage) => {
        if (m.type !== type) return false;
        clearTimeout(timer);
        resolve(m as Extract<ClientsMessage, { type: T }>);
        return true;
      };
      this.waiters.push(waiter);
    });
  }

  async counters(): Promise<ClientsCounters> {
    const reply = this.next('counters', 30_000);
    this.send({ cmd: 'counters' });
    return (await reply).counters;
  }

  async stop(): Promise<ClientsCounters | null> {
    if (this.exited) return null;
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    const last = this.next('counters', 30_000).catch(() => null);
    this.send({ cmd: 'stop' });
    const counters = await last;
    const left = await Promise.race([gone.then(() => true), sleep(10_000).then(() => false)]);
    if (!left) this.proc.kill('SIGKILL');
    return counters?.counters ?? null;
  }
}

function medianSample(samples: MemorySample[]): MemorySample {
  const pick = (k: keyof MemorySample) => median(samples.map((s) => s[k]));
  return {
    rss: pick('rss'),
    heapUsed: pick('heapUsed'),
    heapTotal: pick('heapTotal'),
    external: pick('external'),
    arrayBuffers: pick('arrayBuffers'),
  };
}

/**
 * Memory after a full collection, once it has settled: V8 gives freed heap pages back to
 * the system some seconds after a collection, not at once. One sample a second, each after
 * a full collection, until three in a row agree within 1 MB (at least `minSamples`, at most
 * 30); the median of the last three.
 */
export async function settledMemory(server: ServerChild, minSamples: number): Promise<MemorySample> {
  const samples: MemorySample[] = [];
  const near = (a: MemorySample, b: MemorySample) =>
    Math.abs(a.rss - b.rss) <= MB && Math.abs(a.heapTotal - b.heapTotal) <= MB;
  for (let i = 0; i < 30; i++) {
    samples.push(await server.request<MemorySample>({ cmd: 'memory', gc: true }));
    const [a, b, c] = samples.slice(-3);
    if (samples.length >= minSamples && a && b && c && near(a, b) && near(b, c)) break;
    await sleep(1000);
  }
  return medianSample(samples.slice(-3));
}
