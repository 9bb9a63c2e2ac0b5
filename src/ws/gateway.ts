import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CLOSE_CODES } from '../api/protocol.js';
import type { AuthFailures } from '../auth/auth-failures.js';
import type { Principal } from '../auth/principal.js';
import type { TokenService } from '../auth/token-service.js';
import { headerDeadline } from '../http/header-deadline.js';
import type { ClientRegistry } from '../clients/registry.js';
import type { Config } from '../config/schema.js';
import { AppError, isConnectionError } from '../errors.js';
import { bearerToken } from '../http/auth.js';
import type { Logger } from '../observability/logger.js';
import type { FarmMetrics } from '../observability/metrics.js';
import type { Clock } from '../storage/values.js';
import type { LeaseService } from '../tasks/lease-service.js';
import { decodeFrame } from './codec.js';
import { Connection } from './connection.js';
import { ConnectionCaps } from './connection-caps.js';
import { heartbeatInterval, type Handlers } from './handlers.js';

/**
 * How often the tokens of open connections are checked against the database. A revocation
 * reaches every instance at once on the bus; this catches what the bus could not carry
 * (`ai-farm tokens revoke` without Redis, or while Redis was away).
 */
const TOKEN_RECHECK_MS = 3_000;

export interface GatewayDeps {
  config: Config;
  tokens: TokenService;
  /** The client's address by TRUST_PROXY (default: the socket's peer). */
  clientAddress?: (req: IncomingMessage) => string;
  /** Failed token checks per address (MAX_AUTH_FAILURES). */
  authFailures: AuthFailures;
  registry: ClientRegistry;
  handlers: Handlers;
  leases: LeaseService;
  clock: Clock;
  logger: Logger;
  metrics: FarmMetrics;
}

/**
 * The WebSocket side of the server: authenticates upgrades, enforces frame size, flood
 * and connection limits, hands each message to the handlers in order, and notices
 * silence. Serves on WEBSOCKET_PORT and at /ws on the API port.
 */
export class Gateway {
  private readonly wss: WebSocketServer;
  private readonly connections = new Set<Connection>();
  private readonly caps: ConnectionCaps;
  private dedicated: Server | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private pinger: NodeJS.Timeout | null = null;
  private rechecker: NodeJS.Timeout | null = null;
  private stopping = false;

  constructor(private readonly d: GatewayDeps) {
    this.caps = new ConnectionCaps(d.config);
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: d.config.MAX_MESSAGE_BYTES,
      clientTracking: false,
    });
  }

  /** Serves the gateway at `path` of an existing HTTP server (the API's /ws). */
  attach(server: Server, path: string): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if ((req.url ?? '').split('?')[0] !== path) return void refuse(socket, 404, 'Not Found');
      void this.upgrade(req, socket, head);
    });
  }

  /** Starts the dedicated WebSocket port and the liveness timers; returns the port. */
  async listen(host: string, port: number): Promise<number> {
    const server = createServer(headerDeadline(this.d.config.HEADERS_TIMEOUT), (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('This port speaks WebSocket only.\n');
    });
    server.on(
      'upgrade',
      (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(req, socket, head),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.dedicated = server;
    const timeoutMs = this.d.config.CONNECTION_TIMEOUT * 1000;
    this.sweeper = setInterval(() => void this.sweep(), Math.min(1000, timeoutMs / 4));
    this.pinger = setInterval(() => this.ping(), heartbeatInterval(this.d.config) * 1000);
    this.rechecker = setInterval(() => void this.recheckTokens(), TOKEN_RECHECK_MS);
    return (server.address() as AddressInfo).port;
  }

  connectionCount(): number {
    return this.connections.size;
  }

  /** Marks a client alive (used by uploads in flight, which are not WebSocket messages). */
  touch(clientId: string): void {
    const c = this.d.registry.get(clientId);
    if (c) c.lastSeen = this.d.clock.now().getTime();
  }

  /**
   * Ends every connection opened with a revoked token: closed with 4001, nothing more it
   * sends is handled, no task is pushed to it, and its client's leases go back at once (it
   * cannot come back with that token). Returns how many were closed.
   */
  revokeToken(tokenId: string): number {
    let n = 0;
    for (const c of this.connections) {
      if (c.revoked || c.principal?.kind !== 'token' || c.principal.id !== tokenId) continue;
      c.revoked = true;
      const client = c.clientId ? this.d.registry.get(c.clientId) : undefined;
      if (client && client.owner === c) client.send = null;
      c.close(CLOSE_CODES.unauthorized, `token ${tokenId} was revoked`);
      n++;
    }
    if (n > 0) this.d.logger.info({ token: tokenId, connections: n }, 'revoked token: connections closed');
    return n;
  }

  /** Closes the connections whose token is no longer valid in the database. */
  private async recheckTokens(): Promise<void> {
    const ids = new Set<string>();
    for (const c of this.connections)
      if (c.principal?.kind === 'token' && !c.revoked) ids.add(c.principal.id);
    if (ids.size === 0) return;
    try {
      const active = await this.d.tokens.stillActive([...ids]);
      for (const id of ids) if (!active.has(id)) this.revokeToken(id);
    } catch (err) {
      // The database is away: the next check tries again.
      this.d.logger.debug({ err }, 'token re-check failed');
    }
  }

  /** Closes every connection (clients reconnect elsewhere or later) and the port. */
  async close(): Promise<void> {
    this.stopping = true;
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.pinger) clearInterval(this.pinger);
    if (this.rechecker) clearInterval(this.rechecker);
    for (const c of this.connections) c.close(CLOSE_CODES.goingAway, 'server shutting down');
    await Promise.all([...this.connections].map((c) => c.queue));
    for (const c of this.connections) c.ws.terminate();
    this.wss.close();
    if (this.dedicated) {
      const s = this.dedicated;
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    if (this.stopping) return refuse(socket, 503, 'Server shutting down');
    try {
      const origin = req.headers.origin;
      if (origin && !sameOrigin(origin, req.headers.host)) return refuse(socket, 403, 'Forbidden origin');
      const remote = this.d.clientAddress?.(req) ?? req.socket.remoteAddress ?? '';
      const failures = this.d.authFailures;
      const wait = failures.retryAfter(remote);
      if (wait > 0) {
        this.d.metrics.errors.inc({ code: 'too_many_auth_failures' });
        return refuse(
          socket,
          429,
          'Too Many Requests',
          { 'Retry-After': String(wait) },
          failures.describe(remote),
        );
      }
      const crowded = this.caps.addressRefusal(remote);
      if (crowded !== null) {
        this.d.metrics.errors.inc({ code: 'too_many_connections' });
        return refuse(socket, 429, 'Too Many Requests', {}, crowded);
      }
      const url = new URL(req.url ?? '/', 'http://x');
      const token = bearerToken(req.headers.authorization) ?? url.searchParams.get('token');
      let principal: Principal | null = null;
      if (token) {
        principal = await this.d.tokens.authenticate(token);
        if (!principal) {
          failures.record(remote);
          return refuse(socket, 401, 'Unauthorized: unknown or revoked token');
        }
        if (principal.role !== 'worker' && principal.role !== 'admin') {
          return refuse(socket, 403, `Forbidden: a ${principal.role} token cannot connect as a worker`);
        }
      } else if (!this.d.config.ALLOW_ANONYMOUS_CLIENTS) {
        failures.record(remote);
        return refuse(socket, 401, 'Unauthorized: send a worker token');
      }
      const place = this.caps.take(principal?.id ?? null, remote);
      if (!place.ok) {
        this.d.metrics.errors.inc({ code: 'too_many_connections' });
        return refuse(socket, 429, 'Too Many Requests', {}, place.message);
      }
      // However the socket ends (refused handshake, close, reset), its place is given back.
      socket.once('close', place.release);
      if (socket.destroyed) place.release();
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, principal, remote));
    } catch (err) {
      this.d.logger.error({ err }, 'websocket upgrade failed');
      refuse(socket, isConnectionError(err) ? 503 : 500, 'Upgrade failed');
    }
  }

  private accept(ws: WebSocket, principal: Principal | null, remote: string): void {
    const now = this.d.clock.now().getTime();
    const conn = new Connection(
      ws,
      principal,
      remote,
      now,
      (type) => this.d.metrics.messages.inc({ type, direction: 'out' }),
      this.d.config.MAX_MESSAGES_PER_SECOND,
    );
    if (this.connections.size >= this.d.config.MAX_CLIENTS) {
      conn.close(CLOSE_CODES.serverFull, `server full: MAX_CLIENTS=${this.d.config.MAX_CLIENTS} reached`);
      return;
    }
    this.connections.add(conn);
    const registerWithin = this.d.config.REGISTER_TIMEOUT;
    const registerTimer = setTimeout(() => {
      if (!conn.clientId)
        conn.close(CLOSE_CODES.registrationTimeout, `register within ${registerWithin} s of connecting`);
    }, registerWithin * 1000);
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(conn, data, isBinary));
    ws.on('pong', () => this.seen(conn));
    ws.on('error', (err) => this.d.logger.debug({ err, client: conn.clientId }, 'websocket error'));
    ws.on('close', (code) => {
      // 1000/1001 from the client is a deliberate goodbye; codes the server sent are not.
      const ending = conn.revoked
        ? 'revoked'
        : !conn.closed && (code === 1000 || code === 1001)
          ? 'goodbye'
          : 'dropped';
      clearTimeout(registerTimer);
      conn.closed = true;
      this.connections.delete(conn);
      if (code === CLOSE_CODES.tooBig) this.d.metrics.errors.inc({ code: 'message_too_big' });
      // At shutdown clients keep their leases: the next start restores them.
      if (this.stopping) return;
      conn.queue = conn.queue.then(() =>
        this.d.handlers
          .disconnected(conn, ending)
          .catch((err: unknown) => this.d.logger.error({ err }, 'disconnect failed')),
      );
    });
  }

  private onMessage(conn: Connection, data: Buffer, isBinary: boolean): void {
    // Whatever a revoked token's socket still sends while it closes is refused unread.
    if (conn.revoked) return;
    const now = this.d.clock.now().getTime();
    if (!conn.take(now)) {
      this.d.metrics.errors.inc({ code: 'message_flood' });
      conn.close(CLOSE_CODES.policy, `message flood: more than ${this.d.config.MAX_MESSAGES_PER_SECOND}/s`);
      return;
    }
    this.seen(conn);
    const decoded = decodeFrame(data, isBinary, conn.clientId !== null);
    if (!decoded.ok) {
      this.d.metrics.errors.inc({ code: decoded.code });
      conn.send({ type: 'error', reply_to: decoded.msgId, code: decoded.code, message: decoded.message });
      return;
    }
    const msg = decoded.msg;
    if (decoded.original) conn.original = true;
    this.d.metrics.messages.inc({ type: msg.type, direction: 'in' });
    // A result whose connection has only results ahead of it starts at once (results do
    // not depend on one another), so a worker's finished tasks share a group commit; its
    // reply still waits its turn, so replies keep the order of the messages.
    const isResult = msg.type === 'task_result';
    const early = isResult && conn.othersQueued === 0 ? this.d.handlers.handle(conn, msg) : null;
    early?.catch(() => undefined); // handled when its turn comes
    if (!isResult) conn.othersQueued++;
    conn.queue = conn.queue.then(async () => {
      try {
        if (conn.revoked || (conn.closed && !isResult)) return;
        await (early ?? this.d.handlers.handle(conn, msg));
      } catch (err) {
        const app = err instanceof AppError ? err : null;
        const code = app?.code ?? (isConnectionError(err) ? 'database_unavailable' : 'internal_error');
        if (!app)
          this.d.logger.error({ err, type: msg.type, client: conn.clientId }, 'message handling failed');
        this.d.metrics.errors.inc({ code });
        conn.send({
          type: 'error',
          reply_to: msg.msg_id ?? null,
          code,
          message:
            app?.message ??
            (code === 'database_unavailable' ? 'database unavailable; retry' : 'internal error'),
        });
      } finally {
        if (!isResult) conn.othersQueued--;
      }
    });
  }

  private seen(conn: Connection): void {
    const now = this.d.clock.now().getTime();
    conn.lastSeen = now;
    if (conn.clientId) {
      const c = this.d.registry.get(conn.clientId);
      if (c && c.owner === conn) c.lastSeen = now;
    }
  }

  /**
   * Pings only connections silent for a heartbeat interval: one that sent anything since is
   * known alive, and pinging all of them at once costs a burst of writes and pongs.
   */
  private ping(): void {
    const quietSince = this.d.clock.now().getTime() - heartbeatInterval(this.d.config) * 1000;
    for (const c of this.connections) if (!c.closed && c.lastSeen <= quietSince) c.ws.ping();
  }

  /** Silent connections are closed; leases of clients gone past CONNECTION_TIMEOUT are released. */
  private async sweep(): Promise<void> {
    const now = this.d.clock.now().getTime();
    const timeoutMs = this.d.config.CONNECTION_TIMEOUT * 1000;
    for (const c of this.connections) {
      if (now - c.lastSeen > timeoutMs)
        c.close(CLOSE_CODES.timeout, `silent for ${this.d.config.CONNECTION_TIMEOUT} s`);
    }
    for (const client of [...this.d.registry.all()]) {
      if (now - client.lastSeen <= timeoutMs) continue;
      if (client.owner)
        client.owner.close(CLOSE_CODES.timeout, `silent for ${this.d.config.CONNECTION_TIMEOUT} s`);
      client.send = null;
      client.owner = null;
      this.d.registry.remove(client.id);
      const seconds = Math.round((now - client.lastSeen) / 1000);
      await this.d.leases
        .releaseClient(client, `client ${client.id} silent for ${seconds} s (lease expired)`)
        .catch((err: unknown) => this.d.logger.error({ err, client: client.id }, 'releasing leases failed'));
    }
  }
}

/** Answers an upgrade with an HTTP error (the status line's text, extra headers, a plain-text body) and closes. */
function refuse(
  socket: Duplex,
  status: number,
  text: string,
  headers: Record<string, string> = {},
  body = '',
): void {
  if (socket.writable) {
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
    const type = body ? 'Content-Type: text/plain; charset=utf-8\r\n' : '';
    socket.write(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n${extra.join('')}${type}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** Browsers send Origin; only the server's own pages may open a socket from one. */
function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
