import type { WebSocket } from 'ws';
import type { ServerMessage } from '../api/protocol.js';
import type { Principal } from '../auth/principal.js';

/** One WebSocket connection, before and after its client registers. */
export class Connection {
  clientId: string | null = null;
  lastSeen: number;
  private tokens: number;
  private lastRefill: number;
  /** Messages of one connection are handled in order, one at a time. */
  queue: Promise<void> = Promise.resolve();
  /** Messages other than task_result queued or being handled (a result may start early when 0). */
  othersQueued = 0;
  closed = false;
  /** It registered with a bare system-info frame, as the original AI Farm client does. */
  original = false;
  /** Its token was revoked: nothing more it sends is handled, and its client's leases go back at once. */
  revoked = false;

  constructor(
    readonly ws: WebSocket,
    /** null in the unsafe anonymous mode. */
    readonly principal: Principal | null,
    readonly remote: string,
    now: number,
    private readonly onSend: (type: string) => void,
    /** Messages per second allowed on average (MAX_MESSAGES_PER_SECOND); bursts of twice that. */
    private readonly ratePerSecond: number,
  ) {
    this.tokens = 2 * ratePerSecond;
    this.lastSeen = now;
    this.lastRefill = now;
  }

  send(msg: ServerMessage): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.onSend(msg.type);
    this.cork();
    this.ws.send(JSON.stringify(msg));
  }

  private corked = false;

  /**
   * The messages sent to one client in one event-loop turn (a pass's tasks, a commit's
   * acks) leave in one socket write instead of one write each.
   */
  private cork(): void {
    if (this.corked) return;
    const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (!socket) return;
    this.corked = true;
    socket.cork();
    setImmediate(() => {
      this.corked = false;
      socket.uncork();
    });
  }

  /** Token bucket: false when the client sends faster than its rate for too long. */
  take(now: number): boolean {
    const burst = 2 * this.ratePerSecond;
    this.tokens = Math.min(burst, this.tokens + ((now - this.lastRefill) / 1000) * this.ratePerSecond);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.ws.close(code, reason.slice(0, 120));
    } catch {
      this.ws.terminate();
    }
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }
}
