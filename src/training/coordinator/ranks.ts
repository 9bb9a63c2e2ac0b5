/**
 * A training task's ranks as its rounds reach them: the clients this instance holds directly,
 * the others through the bus (the instance holding their socket delivers). A round tells them
 * that the next round starts or that training is complete, and gives up the ranks that missed
 * a deadline.
 */
import type { Kysely } from 'kysely';
import type { ServerMessage } from '../../api/protocol.js';
import type { Bus } from '../../bus/bus.js';
import type { ClientRegistry, Lease } from '../../clients/registry.js';
import type { Logger } from '../../observability/logger.js';
import type { Database } from '../../storage/schema.js';
import { liveRanks, type TrainingOwnership } from './ownership.js';

/** A live rank held through another instance. */
export interface RemoteRank {
  client_id: string;
  rank: number;
  attempt: number;
}

export interface RanksDeps {
  db: Kysely<Database>;
  registry: ClientRegistry;
  bus: Bus;
  logger: Logger;
  ownership?: TrainingOwnership;
  /** How a rank that missed a deadline is given up (LeaseService.releaseLease), once the farm set it. */
  release: () => ((lease: Lease, reason: string) => Promise<void>) | null;
}

export class Ranks {
  constructor(private readonly d: RanksDeps) {}

  /** The task's leases this instance holds (reserved ones left out). */
  local(taskId: number): Lease[] {
    return this.d.registry.leasesOf(taskId).filter((l) => l.assignmentId !== 0);
  }

  /** Live ranks of a task held through other instances (none on a lone instance). */
  async remote(taskId: number): Promise<RemoteRank[]> {
    if (!this.d.ownership) return [];
    const rows = await liveRanks(this.d.db, taskId);
    return rows.filter((r) => this.d.registry.get(r.client_id)?.leases.get(taskId)?.attempt !== r.attempt);
  }

  /** Sends each local lease and remote rank its message (remote ones through the bus). */
  async tell(
    taskId: number,
    local: readonly Lease[],
    remote: readonly RemoteRank[],
    message: (rank: number, attempt: number) => ServerMessage,
  ): Promise<void> {
    for (const l of local) this.d.registry.get(l.clientId)?.send?.(message(l.rank, l.attempt));
    await this.pushRemote(taskId, remote, message);
  }

  /** Sends the task's ranks in `only` (all when null), local and remote, their message. */
  async tellSome(
    taskId: number,
    only: ReadonlySet<number> | null,
    message: (rank: number, attempt: number) => ServerMessage,
  ): Promise<void> {
    const mine = (r: { rank: number }) => only === null || only.has(r.rank);
    const remote = (await this.remote(taskId)).filter(mine);
    await this.tell(taskId, this.local(taskId).filter(mine), remote, message);
  }

  /** Training is over: every rank is told, and the local ones give their lease up. */
  async complete(
    taskId: number,
    local: readonly Lease[],
    remote: readonly RemoteRank[],
    message: ServerMessage,
    forget: () => void,
  ): Promise<void> {
    await this.pushRemote(taskId, remote, () => message);
    forget();
    for (const l of local) {
      const client = this.d.registry.get(l.clientId);
      client?.leases.delete(taskId);
      client?.send?.(message);
    }
  }

  /** Gives up the ranks without an update in `accepted` (they go to other clients). */
  async releaseLate(taskId: number, accepted: ReadonlySet<number>, why: (rank: number) => string) {
    const release = this.d.release();
    for (const l of this.local(taskId).filter((l) => !accepted.has(l.rank))) {
      await release?.(l, why(l.rank)).catch((err: unknown) =>
        this.d.logger.error({ err, taskId, rank: l.rank }, 'releasing a late rank failed'),
      );
    }
    // Ranks whose sockets other instances hold are released there.
    for (const r of await this.remote(taskId)) {
      if (accepted.has(r.rank)) continue;
      await this.d.bus.publish('cluster.release', {
        client_id: r.client_id,
        task_id: taskId,
        attempt: r.attempt,
        reason: why(r.rank),
      });
    }
  }

  private async pushRemote(
    taskId: number,
    ranks: readonly RemoteRank[],
    message: (rank: number, attempt: number) => ServerMessage,
  ): Promise<void> {
    for (const r of ranks) {
      await this.d.bus.publish('cluster.push', {
        client_id: r.client_id,
        task_id: taskId,
        attempt: r.attempt,
        message: message(r.rank, r.attempt),
      });
    }
  }
}
