import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import {
  CLOSE_CODES,
  PROTOCOL_VERSION,
  type ClientMessage,
  type DistributedNoteMessage,
  type HeartbeatMessage,
  type InitDistributedMessage,
  type ServerMessage,
  type RegisterMessage,
  type TaskProgressMessage,
  type TaskLogMessage,
  type TaskResultMessage,
} from '../api/protocol.js';
import type { Bus } from '../bus/bus.js';
import {
  busySlots,
  capacityFromSystemInfo,
  rememberFinished,
  type ClientRegistry,
  type FarmClient,
} from '../clients/registry.js';
import { utilizationFromSystemInfo } from '../compat/utilization.js';
import type { Config } from '../config/schema.js';
import { AppError } from '../errors.js';
import type { Dispatcher } from '../scheduling/dispatcher.js';
import { findClient, updateClient, upsertClient } from '../storage/client-repo.js';
import { insertLogLines, pruneLogLines } from '../storage/log-repo.js';
import type { Database } from '../storage/schema.js';
import { toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import type { LeaseService } from '../tasks/lease-service.js';
import { taskIdOf } from './codec.js';
import type { Connection } from './connection.js';

export interface HandlerDeps {
  config: Config;
  db: Kysely<Database>;
  writes: WriteQueue;
  registry: ClientRegistry;
  dispatcher: Dispatcher;
  leases: LeaseService;
  bus: Bus;
  clock: Clock;
  /** Several instances: takes the client's live leases over from the instance that held it (src/cluster). */
  adopt?: (client: FarmClient) => Promise<void>;
}

/** Seconds between heartbeats the server asks for: a third of the timeout, at most 30. */
export function heartbeatInterval(config: Config): number {
  return Math.min(30, config.CONNECTION_TIMEOUT / 3);
}

/** Message handlers: thin, they check who is asking and call the services. */
export class Handlers {
  private logBatches = 0;

  constructor(private readonly d: HandlerDeps) {}

  async handle(conn: Connection, msg: ClientMessage): Promise<void> {
    if (msg.type === 'register') return this.register(conn, msg);
    const client = this.registered(conn, msg);
    switch (msg.type) {
      case 'task_request':
        return this.taskRequest(conn, client, msg.msg_id ?? null);
      case 'heartbeat':
        return this.heartbeat(conn, client, msg);
      case 'task_progress':
        return this.progress(conn, client, msg);
      case 'task_result':
        return this.result(conn, client, msg);
      case 'task_log':
        return this.log(conn, client, msg);
      case 'init_distributed':
        return this.initDistributed(conn, client, msg);
      case 'distributed_ready':
      case 'distributed_cleanup':
        return this.distributedNote(conn, client, msg);
    }
  }

  private registered(conn: Connection, msg: Exclude<ClientMessage, RegisterMessage>): FarmClient {
    if (!conn.clientId)
      throw new AppError('not_registered', 'send register (or the system-info object) first');
    if ('client_id' in msg && msg.client_id && msg.client_id !== conn.clientId) {
      throw new AppError(
        'client_id_mismatch',
        `this connection is client ${conn.clientId}, not ${msg.client_id}`,
      );
    }
    const client = this.d.registry.get(conn.clientId);
    if (!client) throw new AppError('not_registered', 'register again');
    return client;
  }

  private async register(conn: Connection, msg: RegisterMessage): Promise<void> {
    const { registry, config, clock } = this.d;
    if (conn.clientId) throw new AppError('already_registered', `already registered as ${conn.clientId}`);
    const id = msg.id ?? msg.client_id ?? `c-${randomUUID()}`;
    const tokenId = conn.principal?.id ?? null;
    const existing = await findClient(this.d.db, id);
    if (existing?.token_id && existing.token_id !== tokenId) {
      conn.send({
        type: 'error',
        reply_to: msg.msg_id ?? null,
        code: 'client_id_taken',
        message: `client id ${id} belongs to another token`,
      });
      conn.close(CLOSE_CODES.clientIdTaken, 'client id belongs to another token');
      return;
    }
    const hardware = { ...capacityFromSystemInfo(msg), taskTypes: msg.task_types };
    const now = clock.now();
    const cordoned = Number(existing?.cordoned ?? 0) === 1;
    const known = registry.get(id);
    // The same client connecting again replaces its older connection (often a dead one).
    if (known?.owner)
      known.owner.close(CLOSE_CODES.clientIdTaken, 'replaced by a newer connection of this client');
    conn.clientId = id;
    const client: FarmClient = known ?? {
      id,
      tokenId,
      hardware,
      maxTasks: config.MAX_TASKS_PER_CLIENT,
      cordoned,
      send: null,
      owner: null,
      lastSeen: now.getTime(),
      leases: new Map(),
      utilization: null,
    };
    client.hardware = hardware;
    client.tokenId = tokenId;
    client.cordoned = cordoned;
    // The original client runs one task at a time and reads no frames while it does.
    client.original = conn.original && msg.max_tasks === undefined;
    // A client that connects again is not running what it ran before it went away.
    client.stoppedRunning = undefined;
    const wanted = msg.max_tasks ?? (client.original ? 1 : config.MAX_TASKS_PER_CLIENT);
    client.maxTasks = Math.min(config.MAX_TASKS_PER_CLIENT, wanted);
    client.lastSeen = now.getTime();
    const send = (m: ServerMessage) => conn.send(m);
    // Not reachable by the dispatcher until `registered` is out: a task frame must not come
    // first (the original client takes the frame after its init_distributed as the answer).
    client.send = null;
    client.owner = conn;
    registry.add(client);
    const session = {
      ...(msg.session ?? {}),
      platform: msg.platform ?? null,
      task_types: msg.task_types ?? null,
    };
    await this.d.writes
      .run((trx) =>
        upsertClient(trx, {
          id,
          cpu_info: JSON.stringify(msg.cpu),
          ram_info: JSON.stringify(msg.ram),
          gpu_info: msg.gpu === undefined || msg.gpu === null ? null : JSON.stringify(msg.gpu),
          session_info: JSON.stringify(session),
          hostname: msg.hostname ?? null,
          token_id: tokenId,
          connected: 1,
          status: cordoned ? 'inactive' : 'active',
          last_seen: toDbTime(now),
          registered_at: toDbTime(now),
          utilization: null,
        }),
      )
      .catch((err: unknown) => {
        client.send = send; // the error frame tells it; it stays reachable as before
        throw err;
      });
    conn.send({
      type: 'registered',
      reply_to: msg.msg_id ?? null,
      client_id: id,
      protocol_version: PROTOCOL_VERSION,
      heartbeat_interval: heartbeatInterval(config),
      connection_timeout: config.CONNECTION_TIMEOUT,
    });
    client.send = send;
    await this.d.adopt?.(client);
    await this.d.leases.resend(client);
    await this.d.bus.publish('client.changed', {
      client_id: id,
      connected: true,
      status: cordoned ? 'inactive' : 'active',
    });
    this.d.dispatcher.schedule();
    void this.d.dispatcher.reviewUnschedulable();
  }

  private async taskRequest(
    conn: Connection,
    client: FarmClient,
    replyTo: string | number | null,
  ): Promise<void> {
    const before = client.leases.size;
    await this.d.dispatcher.passNow();
    if (client.leases.size > before) return;
    const busy = busySlots(client);
    const slots = Math.min(this.d.config.MAX_TASKS_PER_CLIENT, client.maxTasks);
    // The original client asks for its next task before it sends its result, and may read an
    // answer in place of the one it waits for; a busy one gets its next task when it is free.
    if (client.original && busy >= slots) return;
    const reason = client.cordoned
      ? 'this client is cordoned (status inactive)'
      : busy >= slots
        ? `this client already runs ${busy} task(s), its limit`
        : 'no pending task fits this client';
    conn.send({ type: 'no_task', reply_to: replyTo, reason });
  }

  private async heartbeat(conn: Connection, client: FarmClient, msg: HeartbeatMessage): Promise<void> {
    const utilization =
      msg.utilization ?? (msg.system_info ? utilizationFromSystemInfo(msg.system_info) : null);
    if (utilization) client.utilization = utilization;
    const now = this.d.clock.now();
    conn.send({ type: 'heartbeat_ack', reply_to: msg.msg_id ?? null, timestamp: now.getTime() });
    // Written with every other client heard from by HeartbeatWriter (src/clients/heartbeat-writer.ts).
  }

  private async progress(conn: Connection, client: FarmClient, msg: TaskProgressMessage): Promise<void> {
    const taskId = taskIdOf(msg.task_id);
    try {
      await this.d.leases.progress(client.id, taskId, msg);
    } catch (err) {
      // The original client queues progress but sends its result directly, so progress of
      // a task it has just finished can follow the result: nothing is wrong, drop it.
      const late = msg.attempt === undefined && client.finished?.includes(taskId);
      if (!(err instanceof AppError && err.code === 'stale_attempt' && late)) throw err;
    }
    if (msg.msg_id !== undefined)
      conn.send({ type: 'ack', reply_to: msg.msg_id, of: 'task_progress', task_id: taskId });
  }

  /** Stores a batch of output lines of a task this client holds (bounded per task). */
  private async log(conn: Connection, client: FarmClient, msg: TaskLogMessage): Promise<void> {
    const taskId = taskIdOf(msg.task_id);
    const lease = this.d.leases.lease(client.id, taskId, msg.attempt);
    const at = toDbTime(this.d.clock.now(), true);
    const prune = (this.logBatches = (this.logBatches + 1) % 50) === 0;
    await this.d.writes.run(async (trx) => {
      await insertLogLines(
        trx,
        msg.lines.map((line) => ({ task_id: taskId, at, rank: lease.rank, attempt: lease.attempt, line })),
      );
      if (prune) await pruneLogLines(trx, taskId);
    });
    if (msg.msg_id !== undefined)
      conn.send({ type: 'ack', reply_to: msg.msg_id, of: 'task_log', task_id: taskId });
  }

  private async result(conn: Connection, client: FarmClient, msg: TaskResultMessage): Promise<void> {
    const taskId = taskIdOf(msg.task_id);
    if (client.stoppedRunning?.delete(taskId)) {
      // Its run of a stopped task ended: the slot is free again, the result counts for nothing.
      this.d.dispatcher.schedule();
      throw new AppError('stale_attempt', `task ${taskId} was stopped; this result is not counted`);
    }
    const { duplicate } = await this.d.leases.result(client.id, taskId, msg);
    rememberFinished(client, taskId);
    conn.send({
      type: 'ack',
      reply_to: msg.msg_id ?? null,
      of: 'task_result',
      task_id: taskId,
      ...(duplicate ? { duplicate: true } : {}),
    });
  }

  /** Where the rank of a distributed task the client holds stands, in the original's shape. */
  private async initDistributed(
    conn: Connection,
    client: FarmClient,
    msg: InitDistributedMessage,
  ): Promise<void> {
    const taskId = taskIdOf(msg.task_id);
    const replyTo = msg.msg_id ?? null;
    let lease;
    try {
      lease = this.d.leases.lease(client.id, taskId, undefined);
    } catch (err) {
      // The original client reads `status` and `error` of this answer, not an error frame.
      if (!(err instanceof AppError)) throw err;
      conn.send({
        type: 'init_distributed',
        reply_to: replyTo,
        task_id: taskId,
        status: 'error',
        code: err.code,
        error: err.message,
      });
      return;
    }
    const worldSize = lease.worldSize ?? (await this.d.leases.worldSize(taskId));
    const share = 100 / worldSize;
    conn.send({
      type: 'init_distributed',
      reply_to: replyTo,
      task_id: taskId,
      status: 'ok',
      rank: lease.rank,
      world_size: worldSize,
      master_addr: 'localhost',
      master_port: 29500,
      shard_info: {
        id: lease.rank,
        total_shards: worldSize,
        start_point: lease.rank * share,
        end_point: lease.rank === worldSize - 1 ? 100 : (lease.rank + 1) * share,
      },
    });
  }

  /** distributed_ready and distributed_cleanup: checked against the lease, then only acknowledged if asked. */
  private async distributedNote(
    conn: Connection,
    client: FarmClient,
    msg: DistributedNoteMessage,
  ): Promise<void> {
    const taskId = taskIdOf(msg.task_id);
    this.d.leases.lease(client.id, taskId, undefined);
    if (msg.msg_id !== undefined)
      conn.send({ type: 'ack', reply_to: msg.msg_id, of: msg.type, task_id: taskId });
  }

  /**
   * The client's socket closed. After a drop it keeps its leases until CONNECTION_TIMEOUT
   * after it was last seen; a client that said goodbye (close code 1000 or 1001) gives
   * them back at once, so its work moves on without waiting; so does one whose token was
   * revoked, which cannot come back with it.
   */
  async disconnected(conn: Connection, ending: 'dropped' | 'goodbye' | 'revoked'): Promise<void> {
    if (!conn.clientId) return;
    const client = this.d.registry.get(conn.clientId);
    if (!client || client.owner !== conn) return;
    client.send = null;
    client.owner = null;
    if (ending !== 'dropped') {
      this.d.registry.remove(client.id);
      const why =
        ending === 'goodbye' ? 'disconnected (said goodbye)' : 'disconnected (its token was revoked)';
      await this.d.leases.releaseClient(client, `client ${client.id} ${why}`);
    }
    const now = this.d.clock.now();
    await this.d.writes.run((trx) =>
      updateClient(trx, client.id, {
        connected: 0,
        status: 'inactive',
        last_seen: toDbTime(now),
      }),
    );
    await this.d.bus.publish('client.changed', {
      client_id: client.id,
      connected: false,
      status: 'inactive',
    });
  }
}
