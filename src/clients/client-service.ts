import type { Kysely } from 'kysely';
import type { Client, ListClientsQuery } from '../api/clients.js';
import type { Bus } from '../bus/bus.js';
import type { Presence } from '../bus/presence.js';
import { notFound } from '../errors.js';
import * as repo from '../storage/client-repo.js';
import { insertAudit } from '../storage/token-repo.js';
import type { Database } from '../storage/schema.js';
import { fromDbTime, parseJson, toDbTime, type Clock } from '../storage/values.js';

/** Client (worker machine) use cases behind the HTTP API. */
export class ClientService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly bus: Bus,
    private readonly clock: Clock,
    /** When given, `connected` says whether some instance holds the client's socket now. */
    private readonly presence?: Presence,
  ) {}

  async list(
    q: ListClientsQuery,
  ): Promise<{ items: Client[]; total: number; limit: number; offset: number }> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const { rows, total } = await repo.listClients(this.db, {
      status: q.status,
      connected: q.connected,
      limit,
      offset,
    });
    const live = await this.presence?.connected();
    return { items: rows.map((r) => presentClient(r, live)), total, limit, offset };
  }

  async get(id: string): Promise<Client> {
    const row = await repo.findClient(this.db, id);
    if (!row) throw notFound('client', id);
    return presentClient(row, await this.presence?.connected());
  }

  /**
   * "inactive" cordons the client: it gets no new work, and the work it already runs
   * goes on to the end. "active" lifts the cordon.
   */
  async setStatus(id: string, status: 'active' | 'inactive', actor: string): Promise<Client> {
    const row = await repo.findClient(this.db, id);
    if (!row) throw notFound('client', id);
    const cordoned = status === 'inactive' ? 1 : 0;
    const effective = cordoned === 0 && Number(row.connected) === 1 ? 'active' : 'inactive';
    await repo.updateClient(this.db, id, { cordoned, status: effective });
    await insertAudit(this.db, {
      at: toDbTime(this.clock.now(), true),
      actor,
      action: cordoned ? 'client.cordon' : 'client.uncordon',
      target: id,
    });
    await this.bus.publish('client.changed', { client_id: id, status: effective });
    if (!cordoned) await this.bus.publish('work.available', { task_id: 0 });
    return this.get(id);
  }
}

/** `live`: the farm's connected clients (presence); without it, the row's own flag. */
export function presentClient(r: repo.ClientRow, live?: Map<string, string>): Client {
  return {
    id: r.id,
    hostname: r.hostname,
    cpu_info: parseJson(r.cpu_info),
    ram_info: parseJson(r.ram_info),
    gpu_info: parseJson(r.gpu_info),
    session_info: parseJson(r.session_info),
    last_seen: fromDbTime(r.last_seen) as string,
    status: r.status,
    connected: live ? live.has(r.id) : Number(r.connected) === 1,
    cordoned: Number(r.cordoned) === 1,
    registered_at: fromDbTime(r.registered_at) as string,
    utilization: parseJson(r.utilization),
  };
}
