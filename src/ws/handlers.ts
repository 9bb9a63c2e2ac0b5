import {
  CLOSE_CODES,
  PROTOCOL_VERSION,
  type ClientMessage,
  type DistributedNoteMessage,
  type HeartbeatMessage,
  type InitDistributedMessage,
  type RegisterMessage,
  type TaskProgressMessage,
  type TaskLogMessage,
  type TaskResultMessage,
} from '../api/protocol.js';
import type { LinkEnding, Registration } from '../clients/registration.js';
import { busySlots, rememberFinished, type ClientRegistry, type FarmClient } from '../clients/registry.js';
import { utilizationFromSystemInfo } from '../compat/utilization.js';
import type { Config } from '../config/schema.js';
import { AppError } from '../errors.js';
import type { Dispatcher } from '../scheduling/dispatcher.js';
import { insertLogLines, pruneLogLines } from '../storage/log-repo.js';
import { toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import type { LeaseService } from '../tasks/lease-service.js';
import { taskIdOf } from './codec.js';
import type { Connection } from './connection.js';

export interface HandlerDeps {
  config: Config;
  writes: WriteQueue;
  registry: ClientRegistry;
  dispatcher: Dispatcher;
  leases: LeaseService;
  registration: Registration;
  clock: Clock;
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

  /** Registers the connection's client (src/clients/registration.ts), then answers `registered`. */
  private async register(conn: Connection, msg: RegisterMessage): Promise<void> {
    if (conn.clientId) throw new AppError('already_registered', `already registered as ${conn.clientId}`);
    const r = await this.d.registration.register(conn, msg, conn.principal?.id ?? null);
    if (!r.ok) {
      conn.send({ type: 'error', reply_to: msg.msg_id ?? null, code: r.code, message: r.message });
      conn.close(CLOSE_CODES.clientIdTaken, 'client id belongs to another token');
      return;
    }
    conn.send({
      type: 'registered',
      reply_to: msg.msg_id ?? null,
      client_id: r.client.id,
      protocol_version: PROTOCOL_VERSION,
      heartbeat_interval: heartbeatInterval(this.d.config),
      connection_timeout: this.d.config.CONNECTION_TIMEOUT,
    });
    await this.d.registration.open(r.client, conn);
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

  /** The client's socket closed (see Registration.disconnected). */
  async disconnected(conn: Connection, ending: LinkEnding): Promise<void> {
    await this.d.registration.disconnected(conn, ending);
  }
}
