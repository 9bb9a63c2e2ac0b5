import WebSocket from 'ws';
import { now, sleep } from './common.js';

/** Hardware every simulated worker registers with (the original client's system-info shape). */
function systemInfo(id: string) {
  return {
    id,
    hostname: `bench-${id}`,
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
  };
}

interface TaskFrame {
  type: string;
  data?: { id: number; attempt: number };
  of?: string;
  code?: string;
  message?: string;
}

/**
 * N simulated workers: real WebSocket connections that register with the protocol and
 * answer every `task` with an immediate `task_result` (completed, no work done). They
 * note when each task arrived and count the server's acknowledgements of results, which
 * the server sends only after the result's transaction committed.
 */
export class SimWorkers {
  /** Task id -> when its first `task` message arrived. */
  readonly received = new Map<number, number>();
  /** `task` messages for a task that had already arrived once. */
  duplicateTaskMessages = 0;
  acks = 0;
  lastAckAt = 0;
  /** When each result acknowledgement arrived. */
  readonly ackTimes: number[] = [];
  readonly errors: string[] = [];
  private errorCount = 0;
  private target = Number.POSITIVE_INFINITY;
  private onDone: (() => void) | null = null;

  private constructor(private readonly sockets: WebSocket[]) {}

  /** Connects and registers `count` workers, `parallel` at a time. */
  static async start(wsUrl: string, token: string, count: number, parallel = 20): Promise<SimWorkers> {
    const sockets: WebSocket[] = [];
    const workers = new SimWorkers(sockets);
    for (let i = 0; i < count; i += parallel) {
      const batch = Array.from({ length: Math.min(parallel, count - i) }, (_, j) =>
        workers.connect(wsUrl, token, `w${String(i + j).padStart(4, '0')}`),
      );
      sockets.push(...(await Promise.all(batch)));
    }
    return workers;
  }

  private connect(wsUrl: string, token: string, id: string): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl, {
        headers: { authorization: `Bearer ${token}` },
        perMessageDeflate: false,
      });
      const timer = setTimeout(() => reject(new Error(`worker ${id} not registered within 15 s`)), 15_000);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`worker ${id}: HTTP ${res.statusCode}`)),
      );
      ws.once('open', () => ws.send(JSON.stringify({ type: 'register', msg_id: 'reg', ...systemInfo(id) })));
      ws.on('message', (data: Buffer) => {
        const at = now();
        const m = JSON.parse(data.toString('utf8')) as TaskFrame;
        switch (m.type) {
          case 'task': {
            const task = m.data as { id: number; attempt: number };
            if (this.received.has(task.id)) this.duplicateTaskMessages++;
            else this.received.set(task.id, at);
            ws.send(
              JSON.stringify({
                type: 'task_result',
                task_id: task.id,
                attempt: task.attempt,
                status: 'completed',
              }),
            );
            return;
          }
          case 'ack':
            if (m.of !== 'task_result') return;
            this.acks++;
            this.lastAckAt = at;
            this.ackTimes.push(at);
            if (this.acks >= this.target) this.onDone?.();
            return;
          case 'registered':
            clearTimeout(timer);
            resolve(ws);
            return;
          case 'error':
            if (++this.errorCount <= 20) this.errors.push(`${id}: ${m.code}: ${m.message}`);
            return;
          default:
            return;
        }
      });
    });
  }

  /** Resolves when `n` results have been acknowledged, or after `timeoutMs` (then `false`). */
  async waitForAcks(n: number, timeoutMs: number): Promise<boolean> {
    this.target = n;
    if (this.acks >= n) return true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      new Promise<boolean>((resolve) => (this.onDone = () => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    this.onDone = null;
    return done;
  }

  get errorTotal(): number {
    return this.errorCount;
  }

  async close(): Promise<void> {
    for (const ws of this.sockets) ws.close(1000, 'benchmark done');
    await sleep(100);
    for (const ws of this.sockets) ws.terminate();
  }
}
