/**
 * A benchmark's server child seen from its driver: request/reply over the child's IPC channel.
 * The child sends `{ type: 'ready', ... }` once, then answers each `{ ...request, id }` with
 * `{ type: 'reply', id, ok, value | error }` (bench/farm-server.ts for the dispatch benchmark,
 * bench/capacity-server.ts for the capacity one).
 */
import type { ChildProcess } from 'node:child_process';
import { sleep } from './common.js';

type Reply =
  | { type: 'reply'; id: number; ok: true; value: unknown }
  | { type: 'reply'; id: number; ok: false; error: string };

/** A request as the caller writes it: the id is this class's to number. */
export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export class IpcChild<Req extends { id: number; cmd: string }, Ready extends { type: 'ready' }> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  readonly ready: Promise<Ready>;
  private exited = false;

  /**
   * `requestTimeoutMs`: how long a request waits for its reply unless it says otherwise;
   * `stopTimeoutMs`: how long `stop` waits for the child to answer before it is killed.
   */
  constructor(
    readonly proc: ChildProcess,
    private readonly timeouts: { requestTimeoutMs: number; stopTimeoutMs: number },
  ) {
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server child not ready within 60 s')), 60_000);
      proc.on('message', (raw) => {
        const m = raw as Reply | { type: 'ready' };
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(raw as Ready);
          return;
        }
        const w = this.waiting.get(m.id);
        if (!w) return;
        this.waiting.delete(m.id);
        if (m.ok) w.resolve(m.value);
        else w.reject(new Error(`server child: ${m.error}`));
      });
      proc.once('exit', (code) => {
        this.exited = true;
        clearTimeout(timer);
        const err = new Error(`server child exited with code ${code}`);
        reject(err);
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
      });
    });
  }

  request<T>(req: WithoutId<Req>, timeoutMs = this.timeouts.requestTimeoutMs): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`server child: ${req.cmd} timed out`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send({ ...req, id } as Req);
    });
  }

  /** Asks the child to stop (it drops what it set up); kills it if it does not leave. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    try {
      await this.request({ cmd: 'stop' } as WithoutId<Req>, this.timeouts.stopTimeoutMs);
    } catch {
      // Killed below.
    }
    const left = await Promise.race([gone.then(() => true), sleep(10_000).then(() => false)]);
    if (!left) this.proc.kill('SIGKILL');
  }
}
