import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import {
  CLOSE_CODES,
  PROTOCOL_VERSION,
  type RegisteredMessage,
  type ServerMessage,
  type SystemInfo,
  type TaskData,
} from '../api/protocol.js';
import { Backoff } from './backoff.js';
import { parseServerMessage, replyToOf } from './messages.js';
import { FATAL_REGISTRATION_CODES, ProtocolError, WorkerClientError } from './sdk-errors.js';
import type {
  Ack,
  HeartbeatAck,
  ProgressReport,
  ResultReport,
  WorkerClientEvents,
  WorkerClientOptions,
} from './sdk-types.js';

/** A reliable request the server could not store (database_unavailable) is sent again after this, ms. */
const UNAVAILABLE_RETRY_MS = 1000;

interface Pending {
  msgId: string;
  message: Record<string, unknown>;
  /** Reply types that settle it successfully. */
  expect: ReadonlySet<string>;
  /** Kept across reconnections and sent again until answered (results). */
  reliable: boolean;
  /** A task_request: a `task` without reply_to answers it too. */
  acceptsTask: boolean;
  timeoutMs: number;
  resolve(m: ServerMessage): void;
  reject(e: Error): void;
  timer?: ReturnType<typeof setTimeout> | undefined;
  sentOn: WebSocket | null;
}

/**
 * A worker's connection to the AI Farm gateway: registers, keeps its id across
 * reconnections (exponential backoff with jitter), heartbeats, correlates requests with
 * their ack or error by msg_id, and emits typed events for tasks and control messages.
 */
export class WorkerClient extends EventEmitter<WorkerClientEvents> {
  private readonly opts: WorkerClientOptions;
  private readonly backoff: Backoff;
  private readonly pending = new Map<string, Pending>();
  private readonly prefix = randomBytes(3).toString('hex');
  private seq = 0;
  private ws: WebSocket | null = null;
  private registered = false;
  private clientId: string | undefined;
  private registeredAt = 0;
  private lastHeard = 0;
  private closing = false;
  private timers: ReturnType<typeof setInterval>[] = [];
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private fatal: WorkerClientError | undefined;
  private connecting: Promise<RegisteredMessage> | undefined;
  private settleConnect: { resolve(m: RegisteredMessage): void; reject(e: Error): void } | undefined;

  constructor(opts: WorkerClientOptions) {
    super();
    this.opts = opts;
    this.clientId = opts.id;
    this.backoff = new Backoff(opts.backoff);
  }

  /** The client id the server confirmed (or the one given, before registration). */
  get id(): string | undefined {
    return this.clientId;
  }

  /** True while registered on an open connection. */
  get connected(): boolean {
    return this.registered && this.ws?.readyState === WebSocket.OPEN;
  }

  /**
   * Connects and registers. Resolves on the first registration, retrying with backoff
   * meanwhile; rejects when the token is refused, attempts run out, or close() is called.
   */
  connect(): Promise<RegisteredMessage> {
    if (this.closing) return Promise.reject(new WorkerClientError('closed', 'the client is closed'));
    this.connecting ??= new Promise<RegisteredMessage>((resolve, reject) => {
      this.settleConnect = { resolve, reject };
      this.open();
    });
    return this.connecting;
  }

  /** Reports progress (not retried: a newer report supersedes a lost one). */
  sendProgress(report: ProgressReport): Promise<Ack> {
    return this.request({ type: 'task_progress', ...report }, { expect: ['ack'] }) as Promise<Ack>;
  }

  /** Sends a batch of a task's output lines (best effort, not retried). */
  sendLog(report: { task_id: number; attempt: number; rank: number; lines: string[] }): Promise<Ack> {
    return this.request({ type: 'task_log', ...report }, { expect: ['ack'] }) as Promise<Ack>;
  }

  /**
   * Reports a task's outcome. Reliable: kept until acknowledged and sent again after a
   * reconnection with the same msg_id (the server counts a result once). Rejects with
   * ProtocolError `stale_attempt` when the work was reassigned meanwhile.
   */
  sendResult(report: ResultReport): Promise<Ack> {
    return this.request(
      { type: 'task_result', ...report },
      { expect: ['ack'], reliable: true },
    ) as Promise<Ack>;
  }

  /** Asks for work: resolves with the task assigned, or null when nothing fits. */
  async requestTask(): Promise<TaskData | null> {
    const m = await this.request({ type: 'task_request' }, { expect: ['task', 'no_task'] });
    return m.type === 'task' ? m.data : null;
  }

  /** Sends a heartbeat now (they are also sent every heartbeat_interval). */
  async heartbeat(): Promise<HeartbeatAck> {
    const utilization = await this.opts.utilization?.();
    const msg: { type: string } & Record<string, unknown> = { type: 'heartbeat' };
    if (utilization) msg.utilization = utilization;
    return (await this.request(msg, { expect: ['heartbeat_ack'] })) as HeartbeatAck;
  }

  /**
   * Sends any client message and waits for its answer (one of `expect`, default ack).
   * Rejects with ProtocolError when the server answers `error`.
   */
  request(
    message: { type: string } & Record<string, unknown>,
    opts: { expect?: string[]; reliable?: boolean; timeoutMs?: number } = {},
  ): Promise<ServerMessage> {
    if (this.closing) return Promise.reject(new WorkerClientError('closed', 'the client is closed'));
    const reliable = opts.reliable ?? false;
    if (!reliable && !this.connected) {
      return Promise.reject(new WorkerClientError('not_connected', 'not connected to the server'));
    }
    const msgId = `${this.prefix}-${++this.seq}`;
    const full: Record<string, unknown> = { ...message, msg_id: msgId };
    if (this.clientId !== undefined && full.client_id === undefined) full.client_id = this.clientId;
    return new Promise<ServerMessage>((resolve, reject) => {
      const p: Pending = {
        msgId,
        message: full,
        expect: new Set(opts.expect ?? ['ack']),
        reliable,
        acceptsTask: message.type === 'task_request',
        timeoutMs: opts.timeoutMs ?? this.opts.requestTimeoutMs ?? 10_000,
        resolve,
        reject,
        sentOn: null,
      };
      this.pending.set(msgId, p);
      if (this.connected) this.transmit(p);
    });
  }

  /** Closes for good: no reconnection; pending requests reject with `closed`. */
  async close(code = 1000, reason = 'client closing'): Promise<void> {
    if (this.closing && !this.ws) return;
    this.closing = true;
    this.shutdown(new WorkerClientError('closed', 'the client is closed'));
    const ws = this.ws;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => ws.terminate(), 2000);
        ws.once('close', () => {
          clearTimeout(force);
          resolve();
        });
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        else ws.close(code, reason);
      });
    }
    this.ws = null;
  }

  // ---- connection lifecycle -----------------------------------------------------------

  private open(): void {
    this.reconnectTimer = undefined;
    const headers: Record<string, string> = {};
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    const ws = new WebSocket(this.opts.url, {
      headers,
      handshakeTimeout: this.opts.handshakeTimeoutMs ?? 10_000,
      maxPayload: this.opts.maxPayload ?? 16 * 1024 * 1024,
      perMessageDeflate: false,
    });
    this.ws = ws;
    let httpStatus: number | undefined;
    ws.on('open', () => void this.register(ws));
    ws.on('message', (data, isBinary) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      if (isBinary) this.emit('invalid_message', 'binary frame', '');
      else this.onFrame(ws, String(data));
    });
    ws.on('pong', () => (this.lastHeard = Date.now()));
    // The handshake's HTTP status is only in the message; it tells a refused token apart.
    ws.on('error', (err) => {
      const m = /Unexpected server response: (\d+)/.exec(err.message);
      if (m) httpStatus = Number(m[1]);
    });
    ws.on('close', (code, reason) => this.onClose(ws, code, String(reason), httpStatus));
  }

  private async register(ws: WebSocket): Promise<void> {
    let info: SystemInfo;
    try {
      info = typeof this.opts.systemInfo === 'function' ? await this.opts.systemInfo() : this.opts.systemInfo;
    } catch (err) {
      this.fail(new WorkerClientError('system_info', `cannot read system info: ${String(err)}`));
      return;
    }
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    const msgId = `${this.prefix}-${++this.seq}`;
    const id = this.clientId ?? info.id;
    const message: Record<string, unknown> = {
      ...info,
      type: 'register',
      msg_id: msgId,
      protocol_version: PROTOCOL_VERSION,
    };
    if (id !== undefined) message.id = id;
    if (this.opts.maxTasks !== undefined) message.max_tasks = this.opts.maxTasks;
    if (this.opts.taskTypes) message.task_types = this.opts.taskTypes;
    const p: Pending = {
      msgId,
      message,
      expect: new Set(['registered']),
      reliable: false,
      acceptsTask: false,
      timeoutMs: this.opts.requestTimeoutMs ?? 10_000,
      // The `registered` message itself is handled in onFrame; this only settles the timer.
      resolve: () => undefined,
      reject: (err) => {
        if (err instanceof ProtocolError && FATAL_REGISTRATION_CODES.has(err.code)) this.fail(err);
        else if (ws === this.ws) ws.terminate(); // try again on a fresh connection
      },
      sentOn: null,
    };
    this.pending.set(msgId, p);
    this.transmit(p, true);
  }

  private onFrame(ws: WebSocket, text: string): void {
    const parsed = parseServerMessage(text);
    if (!parsed.ok) {
      this.emit('invalid_message', parsed.error, text.slice(0, 1000));
      return;
    }
    const msg = parsed.message;
    const replyTo = replyToOf(msg);
    let answered = replyTo === null ? undefined : this.pending.get(String(replyTo));
    if (!answered && msg.type === 'task') {
      answered = [...this.pending.values()].find((p) => p.acceptsTask && p.sentOn === ws);
    }
    if (answered) {
      this.settle(answered, msg);
    } else if (msg.type === 'error') {
      this.emit('server_error', new ProtocolError(msg.code, msg.message, msg.reply_to));
    }
    // The server lost track of this connection's registration: register again afresh.
    if (msg.type === 'error' && msg.code === 'not_registered' && ws === this.ws) ws.terminate();
    switch (msg.type) {
      case 'registered':
        this.onRegistered(ws, msg);
        break;
      case 'task':
        this.emit('task', msg.data);
        break;
      case 'pause':
      case 'resume':
      case 'stop':
        this.emit(msg.type, msg);
        break;
      case 'round_start':
        this.emit('round_start', msg);
        break;
      case 'training_complete':
        this.emit('training_complete', msg);
        break;
      default:
        break;
    }
  }

  private settle(p: Pending, msg: ServerMessage): void {
    clearTimeout(p.timer);
    if (p.reliable && msg.type === 'error' && msg.code === 'database_unavailable') {
      // The server could not store it yet: send it again (same msg_id) until it is stored or
      // refused for good. Dropping it would leave the task running with nobody to end it.
      p.timer = setTimeout(() => {
        if (this.connected && this.pending.has(p.msgId)) this.transmit(p);
      }, UNAVAILABLE_RETRY_MS);
      return;
    }
    this.pending.delete(p.msgId);
    if (msg.type === 'error') p.reject(new ProtocolError(msg.code, msg.message, msg.reply_to));
    else if (p.expect.has(msg.type)) p.resolve(msg);
    else
      p.reject(
        new WorkerClientError('unexpected_reply', `expected ${[...p.expect].join(' or ')}, got ${msg.type}`),
      );
  }

  private onRegistered(ws: WebSocket, msg: RegisteredMessage): void {
    if (ws !== this.ws) return;
    this.registered = true;
    this.clientId = msg.client_id;
    this.registeredAt = Date.now();
    this.startTimers(ws, msg.heartbeat_interval, msg.connection_timeout);
    this.emit('registered', msg);
    this.settleConnect?.resolve(msg);
    // Results that waited for a connection go out now, with their original msg_id.
    for (const p of this.pending.values()) if (p.reliable && p.sentOn !== ws) this.transmit(p);
  }

  private startTimers(ws: WebSocket, heartbeatS: number, timeoutS: number): void {
    this.stopTimers();
    const beatMs = Math.max(1000, (heartbeatS > 0 ? heartbeatS : 30) * 1000);
    const silenceMs = Math.max(beatMs * 2, (timeoutS > 0 ? timeoutS : 60) * 1000);
    this.timers.push(
      setInterval(() => void this.heartbeat().catch(() => undefined), beatMs),
      // A half-open TCP connection never closes by itself: give up on a silent server.
      setInterval(
        () => {
          if (ws === this.ws && Date.now() - this.lastHeard > silenceMs) ws.terminate();
        },
        Math.min(5000, beatMs),
      ),
    );
  }

  private stopTimers(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  private transmit(p: Pending, beforeRegistration = false): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || (!beforeRegistration && !this.registered)) return;
    clearTimeout(p.timer);
    p.sentOn = ws;
    ws.send(JSON.stringify(p.message));
    p.timer = setTimeout(() => {
      if (p.reliable) {
        // Lost ack or a slow server: send again; the server counts it once.
        if (this.connected && this.pending.has(p.msgId)) this.transmit(p);
        return;
      }
      this.pending.delete(p.msgId);
      p.reject(
        new WorkerClientError('timeout', `no answer to ${String(p.message.type)} within ${p.timeoutMs} ms`),
      );
    }, p.timeoutMs);
  }

  private onClose(ws: WebSocket, code: number, reason: string, httpStatus: number | undefined): void {
    if (ws !== this.ws) return;
    this.ws = null;
    this.registered = false;
    this.stopTimers();
    for (const p of [...this.pending.values()]) {
      clearTimeout(p.timer);
      p.timer = undefined;
      if (p.reliable) {
        p.sentOn = null;
      } else {
        this.pending.delete(p.msgId);
        p.reject(new WorkerClientError('disconnected', `connection closed (${code}) before an answer`));
      }
    }
    if (this.closing) return;
    if (code === CLOSE_CODES.unauthorized || httpStatus === 401 || httpStatus === 403) {
      this.fail(
        new WorkerClientError('unauthorized', `the server refused the token (${httpStatus ?? code})`),
      );
      return;
    }
    // Another connection uses this id (a copied id file, another token): reconnecting would
    // only knock it off in turn, back and forth.
    if (code === CLOSE_CODES.clientIdTaken) {
      const why = reason || 'client id taken';
      this.fail(
        new WorkerClientError('client_id_taken', `client id ${this.clientId} is in use elsewhere: ${why}`),
      );
      return;
    }
    if (this.registeredAt && Date.now() - this.registeredAt >= (this.opts.stableAfterMs ?? 30_000)) {
      this.backoff.reset();
    }
    this.registeredAt = 0;
    const canRetry =
      (this.opts.reconnect ?? true) && this.backoff.attempts < (this.opts.maxReconnectAttempts ?? Infinity);
    const delay = canRetry ? this.backoff.next() : null;
    this.emit('disconnected', { code, reason, attempt: this.backoff.attempts, reconnectInMs: delay });
    if (delay === null) {
      this.fail(new WorkerClientError('gave_up', `connection lost (${code} ${reason}); not reconnecting`));
      return;
    }
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  /** Gives up for good with `err`. */
  private fail(err: WorkerClientError): void {
    if (this.fatal || this.closing) return;
    this.fatal = err;
    this.closing = true;
    this.shutdown(err);
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }

  private shutdown(err: WorkerClientError): void {
    clearTimeout(this.reconnectTimer);
    this.stopTimers();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.settleConnect?.reject(err);
    this.settleConnect = undefined;
    this.emit('closed', err.code === 'closed' ? undefined : err);
  }
}
