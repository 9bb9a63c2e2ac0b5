import WebSocket from 'ws';
import { sleep } from './wait.js';
import { systemInfo } from './ws-client.js';

export type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- wire JSON

/**
 * A simulated worker of multi-instance.test.ts, behind its TCP balancer: registers, answers every task at once, reconnects
 * (through the balancer, which skips dead backends) when its socket drops, and re-sends a
 * result that was never acknowledged. Training ranks hand their frames to `onTraining`.
 */
export class SimWorker {
  /** Every `task` frame: task id, attempt, and how many times this worker had connected. */
  readonly frames: { task: number; attempt: number; connection: number }[] = [];
  readonly controls: string[] = [];
  /** Training tasks sent without their round (a real worker fails them): must stay empty. */
  readonly untrained: number[] = [];
  readonly acked = new Set<number>();
  connections = 0;
  private ws: WebSocket | null = null;
  private readonly unacked = new Map<number, Msg>();
  private stopping = false;
  onTraining: ((w: SimWorker, m: Msg) => void) | null = null;

  constructor(
    readonly id: string,
    private readonly url: string,
    private readonly token: string,
    private readonly gpu: boolean,
  ) {}

  async connect(): Promise<void> {
    for (let attempt = 0; attempt < 100 && !this.stopping; attempt++) {
      try {
        await this.open();
        return;
      } catch {
        await sleep(200);
      }
    }
    if (!this.stopping) throw new Error(`${this.id} could not reconnect`);
  }

  private open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { headers: { authorization: `Bearer ${this.token}` } });
      const fail = (err: Error) => {
        ws.terminate();
        reject(err);
      };
      ws.once('error', fail);
      ws.once('open', () => {
        ws.send(
          JSON.stringify({
            type: 'register',
            msg_id: 'reg',
            ...systemInfo(this.id, this.gpu ? { gpus: [8] } : {}),
            max_tasks: 1,
          }),
        );
      });
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as Msg;
        if (m.type === 'registered') {
          ws.off('error', fail);
          ws.on('error', () => undefined);
          this.connections++;
          this.ws = ws;
          // A result sent just before the socket dropped may never have been committed.
          for (const r of this.unacked.values()) this.send(r);
          resolve();
          return;
        }
        this.onMessage(m);
      });
      ws.on('close', () => {
        if (this.ws !== ws) return fail(new Error('closed before registering'));
        this.ws = null;
        if (!this.stopping) void this.connect().catch(() => undefined);
      });
    });
  }

  send(m: Msg): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  private onMessage(m: Msg): void {
    if (m.type === 'task') {
      const d = m.data as Msg;
      this.frames.push({ task: d.id, attempt: d.attempt, connection: this.connections });
      if (d.training) return this.onTraining?.(this, m);
      if ((d.config as Msg | undefined)?.rounds !== undefined) {
        this.untrained.push(d.id as number);
        return;
      }
      const result = {
        type: 'task_result',
        msg_id: `r-${d.id}-${d.attempt}`,
        task_id: d.id,
        attempt: d.attempt,
        status: 'completed',
        result: { by: this.id },
      };
      this.unacked.set(d.id, result);
      this.send(result);
    } else if (m.type === 'ack' && m.of === 'task_result') {
      this.unacked.delete(m.task_id as number);
      this.acked.add(m.task_id as number);
    } else if (m.type === 'pause' || m.type === 'resume') {
      this.controls.push(`${m.type}:${m.task_id}`);
    } else if (m.type === 'round_start' || m.type === 'training_complete') {
      this.onTraining?.(this, m);
    }
  }

  close(): void {
    this.stopping = true;
    this.ws?.terminate();
  }
}
