import type { WebSocket } from 'ws';
import type { ServerMessage } from '../api/protocol.js';
import type { Principal } from '../auth/principal.js';

/** Messages a connection may send per second on average, and in a burst. */
export const FLOOD_RATE_PER_S = 500;
export const FLOOD_BURST = 1000;

/** One WebSocket connection, before and after its client registers. */
export class Connection {
  clientId: string | null = null;
  lastSeen: number;
  private tokens = FLOOD_BURST;
  private lastRefill: number;
  /** Messages of one connection are handled in order, one at a time. */
  queue: Promise<void> = Promise.resolve();
  closed = false;

  constructor(
    readonly ws: WebSocket,
    /** null in the unsafe anonymous mode. */
    readonly principal: Principal | null,
    readonly remote: string,
    now: number,
    private readonly onSend: (type: string) => void,
  ) {
    this.lastSeen = now;
    this.lastRefill = now;
  }

  send(msg: ServerMessage): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.onSend(msg.type);
    this.ws.send(JSON.stringify(msg));
  }

  /** Token bucket: false when the client sends faster than FLOOD_RATE_PER_S for too long. */
  take(now: number): boolean {
    this.tokens = Math.min(FLOOD_BURST, this.tokens + ((now - this.lastRefill) / 1000) * FLOOD_RATE_PER_S);
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
