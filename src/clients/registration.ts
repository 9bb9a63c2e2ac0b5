/**
 * The registration use case: a client connects (its id checked against its token, its row
 * written, its leases taken over from another instance and sent to it again, the dispatcher
 * woken), and disconnects (its leases kept for the grace period, or given back at once).
 * The transport (src/ws) parses the frames, calls these and replies.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { CLOSE_CODES, type RegisterMessage, type ServerMessage } from '../api/protocol.js';
import type { Bus } from '../bus/bus.js';
import type { Dispatcher } from '../scheduling/dispatcher.js';
import { findClient, updateClient, upsertClient } from '../storage/client-repo.js';
import type { Database } from '../storage/schema.js';
import { toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import type { LeaseService } from '../tasks/lease-service.js';
import { capacityFromSystemInfo, type ClientRegistry, type FarmClient } from './registry.js';

/** A client's connection as the domain sees it (a WebSocket in src/ws). */
export interface ClientLink {
  /** The client it registered as; null before. */
  clientId: string | null;
  /** Registered the original AI Farm client's way (a bare system-info frame). */
  original: boolean;
  send(msg: ServerMessage): void;
  close(code: number, reason: string): void;
}

/** How a connection ends: dropped (may come back), said goodbye, or its token was revoked. */
export type LinkEnding = 'dropped' | 'goodbye' | 'revoked';

export interface RegistrationDeps {
  db: Kysely<Database>;
  writes: WriteQueue;
  registry: ClientRegistry;
  dispatcher: Dispatcher;
  leases: LeaseService;
  bus: Bus;
  clock: Clock;
  /** MAX_TASKS_PER_CLIENT. */
  maxTasksPerClient: number;
  /** Several instances: takes the client's live leases over from the instance that held it (src/cluster). */
  adopt?: (client: FarmClient) => Promise<void>;
}

/** What `register` decided: the client, or why its id was refused. */
export type Registered =
  { ok: true; client: FarmClient } | { ok: false; code: 'client_id_taken'; message: string };

export class Registration {
  constructor(private readonly d: RegistrationDeps) {}

  /**
   * Registers the client of `link` (`tokenId`: its token, null in the anonymous mode): the id
   * must be free or this token's; an older connection of the same client is closed. The client
   * is known but not yet reachable: the caller answers `registered`, then calls `open`.
   */
  async register(link: ClientLink, msg: RegisterMessage, tokenId: string | null): Promise<Registered> {
    const { registry, clock } = this.d;
    const id = msg.id ?? msg.client_id ?? `c-${randomUUID()}`;
    const existing = await findClient(this.d.db, id);
    if (existing?.token_id && existing.token_id !== tokenId) {
      return { ok: false, code: 'client_id_taken', message: `client id ${id} belongs to another token` };
    }
    const hardware = { ...capacityFromSystemInfo(msg), taskTypes: msg.task_types };
    const now = clock.now();
    const cordoned = Number(existing?.cordoned ?? 0) === 1;
    const known = registry.get(id);
    // The same client connecting again replaces its older connection (often a dead one).
    if (known?.owner)
      known.owner.close(CLOSE_CODES.clientIdTaken, 'replaced by a newer connection of this client');
    link.clientId = id;
    const client: FarmClient = known ?? {
      id,
      tokenId,
      hardware,
      maxTasks: this.d.maxTasksPerClient,
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
    client.original = link.original && msg.max_tasks === undefined;
    // A client that connects again is not running what it ran before it went away.
    client.stoppedRunning = undefined;
    const wanted = msg.max_tasks ?? (client.original ? 1 : this.d.maxTasksPerClient);
    client.maxTasks = Math.min(this.d.maxTasksPerClient, wanted);
    client.lastSeen = now.getTime();
    // Not reachable by the dispatcher until `registered` is out: a task frame must not come
    // first (the original client takes the frame after its init_distributed as the answer).
    client.send = null;
    client.owner = link;
    registry.add(client);
    // Other instances place ranks on it from this row (src/cluster): its task types and slots.
    const session = {
      ...(msg.session ?? {}),
      platform: msg.platform ?? null,
      task_types: msg.task_types ?? null,
      max_tasks: client.maxTasks,
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
        client.send = (m) => link.send(m); // the error frame tells it; it stays reachable as before
        throw err;
      });
    return { ok: true, client };
  }

  /**
   * Makes a registered client reachable (after its `registered` answer): takes its leases over
   * from another instance, sends it the tasks it holds again, tells the farm and wakes the
   * dispatcher.
   */
  async open(client: FarmClient, link: ClientLink): Promise<void> {
    client.send = (m) => link.send(m);
    await this.d.adopt?.(client);
    await this.d.leases.resend(client);
    await this.d.bus.publish('client.changed', {
      client_id: client.id,
      connected: true,
      status: client.cordoned ? 'inactive' : 'active',
    });
    this.d.dispatcher.schedule();
    void this.d.dispatcher.reviewUnschedulable();
  }

  /**
   * The client's link closed. After a drop it keeps its leases until CONNECTION_TIMEOUT
   * after it was last seen; a client that said goodbye (close code 1000 or 1001) gives
   * them back at once, so its work moves on without waiting; so does one whose token was
   * revoked, which cannot come back with it.
   */
  async disconnected(link: ClientLink, ending: LinkEnding): Promise<void> {
    if (!link.clientId) return;
    const client = this.d.registry.get(link.clientId);
    if (!client || client.owner !== link) return;
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
