/**
 * Several server instances on one database and one Redis, behind any TCP load balancer.
 *
 * Each instance has a row in server_instances and renews its heartbeat every
 * CONNECTION_TIMEOUT / 4 (at most 10 s); one whose heartbeat is older than CONNECTION_TIMEOUT
 * is dead. clients.instance_id says which instance holds a client's socket. On every beat an
 * instance takes over, one conditional UPDATE each, the clients with live leases of dead
 * instances (they get CONNECTION_TIMEOUT to reconnect anywhere before the sweeper releases their
 * leases) and the training tasks whose owner is dead. A client that reconnects to another
 * instance is adopted there with its live leases, read from the database, and the instance that
 * held it before lets it go. Messages for sockets held elsewhere travel on the bus.
 */
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import { CLOSE_CODES, type ServerMessage } from '../api/protocol.js';
import type { Bus } from '../bus/bus.js';
import { hardwareOf, holdLease, leaseFromRow, sessionOf } from '../clients/recovery.js';
import { busySlots, type ClientRegistry, type FarmClient, type Lease } from '../clients/registry.js';
import type { Logger } from '../observability/logger.js';
import type { FarmView, RemoteClient } from '../scheduling/across.js';
import type { Dispatcher } from '../scheduling/dispatcher.js';
import { findClient } from '../storage/client-repo.js';
import type { Executor } from '../storage/executor.js';
import type { Database } from '../storage/schema.js';
import { liveRanks } from '../storage/training-repo.js';
import { toDbTime, type Clock } from '../storage/values.js';
import type { LeaseService } from '../tasks/lease-service.js';
import type {
  RemoteLease,
  RoundCoordinator,
  TrainingOwnership,
} from '../training/coordinator/coordinator.js';
import * as repo from './cluster-repo.js';

export interface ClusterDeps {
  db: Kysely<Database>;
  registry: ClientRegistry;
  bus: Bus;
  clock: Clock;
  logger: Logger;
  instanceId: string;
  /** CONNECTION_TIMEOUT, seconds: an instance silent this long is dead. */
  connectionTimeout: number;
  maxTasksPerClient: number;
}

/** What the cluster acts on, built after it (the farm wires them). */
export interface ClusterParts {
  leases: LeaseService;
  dispatcher: Dispatcher;
  training: RoundCoordinator;
}

/** Heartbeat period for a CONNECTION_TIMEOUT (seconds), ms. */
export function heartbeatMs(connectionTimeout: number): number {
  return Math.max(250, Math.min(10_000, (connectionTimeout * 1000) / 4));
}

export class Cluster implements TrainingOwnership, FarmView {
  readonly id: string;
  private parts: ClusterParts | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> = Promise.resolve();
  private readonly unsubscribes: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly d: ClusterDeps) {
    this.id = d.instanceId;
  }

  attach(parts: ClusterParts): void {
    this.parts = parts;
  }

  private get p(): ClusterParts {
    if (!this.parts) throw new Error('cluster used before attach()');
    return this.parts;
  }

  private cutoff(): string {
    return toDbTime(new Date(this.d.clock.now().getTime() - this.d.connectionTimeout * 1000), true);
  }

  /** Registers this instance, takes over what dead instances left, and starts beating. */
  async start(): Promise<void> {
    const fail = (err: unknown) => this.d.logger.error({ err }, 'adopting leases failed');
    const at = toDbTime(this.d.clock.now(), true);
    await repo.registerInstance(this.d.db, { id: this.id, host: hostname(), pid: process.pid, at });
    this.d.logger.info({ instance: this.id }, 'joined the cluster');
    this.unsubscribes.push(
      this.d.bus.subscribe('cluster.client', (m) => {
        if (m.settled && m.instance_id === this.id) void this.adoptMissing(m.client_id).catch(fail);
        else if (!m.settled) this.released(m.client_id, m.instance_id);
      }),
      this.d.bus.subscribe('cluster.push', (m) => {
        const { client, lease } = this.holder(m.client_id, m.task_id, m.attempt);
        if (m.message.type === 'task' && !lease) {
          void this.placedHere(m.client_id, m.task_id, m.attempt, m.message).catch((err: unknown) =>
            this.d.logger.error({ err, taskId: m.task_id }, 'delivering a rank placed elsewhere failed'),
          );
          return;
        }
        if (!client || !lease) return;
        // The rank ends here: training is over, or a sampled round gave it to another client.
        if (m.message.type === 'training_complete' || m.message.type === 'stop') {
          client.leases.delete(m.task_id);
          this.p.dispatcher.schedule();
        }
        client.send?.(m.message);
      }),
      this.d.bus.subscribe('cluster.release', (m) => {
        const { lease } = this.holder(m.client_id, m.task_id, m.attempt);
        if (lease)
          void this.p.leases
            .releaseLease(lease, m.reason)
            .catch((err: unknown) => this.d.logger.error({ err }, 'releasing a rank failed'));
      }),
    );
    await this.tick();
    let busy = false;
    this.timer = setInterval(() => {
      // A beat slower than the period (a slow database) is not queued up behind.
      if (busy) return;
      busy = true;
      void this.tick()
        .catch((err: unknown) => this.d.logger.error({ err }, 'cluster heartbeat failed'))
        .finally(() => (busy = false));
    }, heartbeatMs(this.d.connectionTimeout));
  }

  /** Leaves: the others take over this instance's clients and trainings at their next beat. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const u of this.unsubscribes.splice(0)) u();
    await this.ticking.catch(() => undefined);
    await repo
      .removeInstance(this.d.db, this.id)
      .catch((err: unknown) => this.d.logger.warn({ err }, 'leaving the cluster failed'));
  }

  /**
   * One beat: heartbeat, then take over what dead instances held. Beats of one instance run
   * one after another (a beat called while the timer's is under way waits for it), so each
   * reads the clock, writes its heartbeat and judges the others in that order.
   */
  tick(): Promise<void> {
    const next = this.ticking.catch(() => undefined).then(() => this.beat());
    this.ticking = next;
    return next;
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    const { db, clock } = this.d;
    const now = clock.now();
    const at = toDbTime(now, true);
    if (!(await repo.heartbeat(db, this.id, at))) {
      this.d.logger.warn({ instance: this.id }, 'this instance was declared dead; joining again');
      await repo.registerInstance(db, { id: this.id, host: hostname(), pid: process.pid, at });
    }
    const live = await repo.liveInstances(db, this.cutoff());
    if (!live.includes(this.id)) live.push(this.id);
    await repo.disconnectOrphans(db, live, toDbTime(now));
    let taken = 0;
    for (const orphan of await repo.orphanClients(db, live)) {
      const { clientId } = orphan;
      if (this.d.registry.get(clientId)?.send) {
        await repo.holdClient(db, clientId, this.id);
        continue;
      }
      if (!(await repo.claimClient(db, orphan, this.id))) continue;
      const row = await findClient(db, clientId);
      for (const a of await repo.liveAssignmentsOf(db, clientId)) {
        if (holdLease(this.d.registry, a, row, now.getTime(), this.d.maxTasksPerClient)) taken++;
      }
    }
    if (taken > 0)
      this.d.logger.info(
        { leases: taken },
        'took over the leases of a dead instance; their clients may reconnect',
      );
    for (const taskId of await repo.orphanTrainings(db, live)) {
      await this.p.training
        .round(taskId)
        .catch((err: unknown) => this.d.logger.error({ err, taskId }, 'taking over a training task failed'));
    }
    await repo.removeDead(db, this.cutoff());
  }

  /**
   * A client registered here: record that this instance holds its socket and, when another
   * instance held it, adopt its live leases from the database (the caller then sends them).
   */
  async adopt(client: FarmClient): Promise<void> {
    const before = await repo.holdClient(this.d.db, client.id, this.id);
    if (before === this.id) return; // this instance's memory is the truth
    const row = await findClient(this.d.db, client.id);
    const now = this.d.clock.now().getTime();
    for (const a of await repo.liveAssignmentsOf(this.d.db, client.id)) {
      holdLease(this.d.registry, a, row, now, this.d.maxTasksPerClient);
    }
    if (before !== null) {
      this.d.logger.info({ client: client.id, from: before }, 'client moved here from another instance');
      await this.d.bus.publish('cluster.client', { client_id: client.id, instance_id: this.id });
    }
  }

  /** Another instance holds this client's socket now: forget it here (its leases went with it). */
  private released(clientId: string, holder: string): void {
    if (holder === this.id) return;
    const client = this.d.registry.get(clientId);
    if (!client) return;
    const conn = client.owner;
    client.send = null;
    client.owner = null;
    this.d.registry.remove(clientId);
    conn?.close(CLOSE_CODES.goingAway, 'connected to another server instance');
    this.p.dispatcher.schedule();
    // A claim for it under way here commits a lease the new holder has not read: once the
    // passes under way are done, it reads the client's leases again.
    void this.p.dispatcher
      .passNow()
      .then(() =>
        this.d.bus.publish('cluster.client', { client_id: clientId, instance_id: holder, settled: true }),
      )
      .catch((err: unknown) => this.d.logger.warn({ err }, 'settling a moved client failed'));
  }

  /** Adopts live leases of a client held here that memory lacks, and sends them to it. */
  private async adoptMissing(clientId: string): Promise<void> {
    const client = this.d.registry.get(clientId);
    if (!client?.send) return;
    const row = await findClient(this.d.db, clientId);
    const now = this.d.clock.now().getTime();
    for (const a of await repo.liveAssignmentsOf(this.d.db, clientId)) {
      const lease = holdLease(this.d.registry, a, row, now, this.d.maxTasksPerClient);
      if (lease) await this.p.leases.resend({ ...client, leases: new Map([[a.task_id, lease]]) });
    }
  }

  /**
   * Another instance placed a rank on a client whose socket this instance holds: its lease is
   * read from the database and held here, and the `task` frame goes out. When a placement of
   * this instance took the client's last slot meanwhile, the rank is given up (it is placed
   * again elsewhere). A client no longer here gets it where it reconnects (adopt).
   */
  private async placedHere(clientId: string, taskId: number, attempt: number, message: ServerMessage) {
    const client = this.d.registry.get(clientId);
    if (!client?.send) return;
    const row = (await repo.liveAssignmentsOf(this.d.db, clientId)).find(
      (a) => a.task_id === taskId && Number(a.attempt) === attempt,
    );
    const held = client.leases.get(taskId);
    // A provisional lease (assignment 0) is this instance's own claim of the task, still in
    // flight: the other instance's claim committed first, so ours cannot (a task is claimed
    // once), and this rank takes its place; our failed claim then leaves it alone. Dropping
    // this rank instead left the client without its task until the stranded-lease sweep ended
    // it, CONNECTION_TIMEOUT later, as lost.
    if (!row || (held && held.assignmentId !== 0)) return;
    if (busySlots(client) - (held ? 1 : 0) >= Math.min(this.d.maxTasksPerClient, client.maxTasks)) {
      const why = `client ${clientId} had no slot left for rank ${row.rank} of task ${taskId} when it arrived`;
      this.d.logger.info({ taskId, client: clientId }, 'rank placed by another instance given up');
      return this.p.leases.releaseDetached(leaseFromRow(row), why);
    }
    const lease = leaseFromRow(row);
    if (message.type === 'task') lease.worldSize = message.data.world_size;
    client.leases.set(taskId, lease);
    client.send(message);
  }

  /** FarmView: clients connected through the other live instances, with their free slots. */
  async remoteClients(): Promise<RemoteClient[]> {
    const others = (await repo.liveInstances(this.d.db, this.cutoff())).filter((i) => i !== this.id);
    const out: RemoteClient[] = [];
    for (const { row, busy } of await repo.remoteClients(this.d.db, others)) {
      const hardware = hardwareOf(row);
      if (!hardware || !row.instance_id || this.d.registry.get(row.id)?.send) continue;
      const wanted = Number(sessionOf(row).max_tasks) || this.d.maxTasksPerClient;
      const maxTasks = Math.min(this.d.maxTasksPerClient, wanted);
      out.push({
        id: row.id,
        ...hardware,
        instanceId: row.instance_id,
        maxTasks,
        freeSlots: Math.max(0, maxTasks - busy),
        cordoned: Number(row.cordoned) === 1,
      });
    }
    return out;
  }

  /** FarmView: clients holding a live rank of the task, whichever instance holds them. */
  async clientsOf(taskId: number): Promise<string[]> {
    return (await liveRanks(this.d.db, taskId)).map((r) => r.client_id);
  }

  private holder(clientId: string, taskId: number, attempt: number): { client?: FarmClient; lease?: Lease } {
    const client = this.d.registry.get(clientId);
    const lease = client?.leases.get(taskId);
    if (!client || !lease || lease.assignmentId === 0 || lease.attempt !== attempt) return {};
    return { client, lease };
  }

  /** TrainingOwnership: owns it already, becomes its first owner, or takes it over from a dead one. */
  async acquire(taskId: number): Promise<boolean> {
    const { db } = this.d;
    const at = toDbTime(this.d.clock.now(), true);
    const owner = await repo.ownerOf(db, taskId);
    if (owner === this.id) return true;
    if (owner === null)
      return (
        (await repo.insertOwner(db, taskId, this.id, at)) || (await repo.ownerOf(db, taskId)) === this.id
      );
    if ((await repo.liveInstances(db, this.cutoff())).includes(owner)) return false;
    if (!(await repo.takeOwner(db, taskId, owner, this.id, at))) return false;
    this.d.logger.info(
      { taskId, from: owner },
      'took over the rounds of a training task from a dead instance',
    );
    return true;
  }

  async holds(db: Executor, taskId: number): Promise<boolean> {
    return (await repo.ownerOf(db, taskId)) === this.id;
  }

  /** The lease of a client connected through another instance, for an upload that reached this one. */
  async remoteLease(clientId: string, taskId: number): Promise<RemoteLease | null> {
    const row = await repo.leaseOf(this.d.db, clientId, taskId);
    if (!row || Number(row.connected) !== 1) return null;
    return { tokenId: row.token_id, rank: Number(row.rank), attempt: Number(row.attempt) };
  }
}
