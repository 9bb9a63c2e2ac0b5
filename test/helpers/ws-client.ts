import WebSocket from 'ws';

/** A bare protocol client for tests: sends JSON, collects what the server sends. */
export class RawClient {
  readonly received: Record<string, unknown>[] = [];
  closeCode: number | null = null;
  closeReason = '';
  private waiters: {
    pred: (m: Record<string, unknown>) => boolean;
    resolve: (m: Record<string, unknown>) => void;
  }[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as Record<string, unknown>;
      this.received.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = String(reason);
    });
  }

  /** `localAddress` picks the source address (any 127.x.y.z on Linux), to act as another machine. */
  static connect(
    url: string,
    token: string | null,
    headers: Record<string, string> = {},
    opts: { localAddress?: string } = {},
  ): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        ...opts,
      });
      const c = new RawClient(ws);
      ws.once('open', () => resolve(c));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** The next message (already received or future) matching `pred`. */
  next(pred: (m: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const seen = this.received.findIndex(pred);
    if (seen >= 0) return Promise.resolve(this.received.splice(seen, 1)[0] as Record<string, unknown>);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching message within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          this.received.splice(this.received.indexOf(m), 1);
          resolve(m);
        },
      });
    });
  }

  type(type: string, timeoutMs?: number): Promise<Record<string, unknown>> {
    return this.next((m) => m.type === type, timeoutMs);
  }

  closed(timeoutMs = 10_000): Promise<number> {
    if (this.closeCode !== null) return Promise.resolve(this.closeCode);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('not closed')), timeoutMs);
      this.ws.once('close', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

/** A system-info object in the original client's shape. */
export function systemInfo(id: string, over: { cores?: number; ramGb?: number; gpus?: number[] } = {}) {
  return {
    id,
    hostname: `host-${id}`,
    platform: { system: 'Linux', release: '6.1', version: '#1', machine: 'x86_64', processor: 'x86_64' },
    cpu: {
      brand: 'Test CPU',
      cores_physical: over.cores ?? 4,
      cores_logical: over.cores ?? 4,
      frequency: { current: 2000, min: 800, max: 3000 },
      usage_percent: 5,
    },
    ram: { total: (over.ramGb ?? 16) * 2 ** 30, available: 8 * 2 ** 30, used: 8 * 2 ** 30, percent: 50 },
    gpu: over.gpus
      ? over.gpus.map((m, i) => ({
          id: i,
          name: 'GPU',
          load: 0.1,
          memory: { total: m * 1024, used: 0, free: m * 1024 },
          temperature: 40,
        }))
      : null,
    session: { created_at: new Date().toISOString(), total_tasks_completed: 0, performance_metrics: {} },
  };
}

/** Connects and registers; returns the client with its `registered` reply consumed. */
export async function registeredClient(
  url: string,
  token: string,
  id: string,
  over: Parameters<typeof systemInfo>[1] & { max_tasks?: number } = {},
): Promise<RawClient> {
  const c = await RawClient.connect(url, token);
  c.send({
    type: 'register',
    msg_id: 'reg',
    ...systemInfo(id, over),
    ...(over.max_tasks ? { max_tasks: over.max_tasks } : {}),
  });
  await c.type('registered');
  return c;
}
