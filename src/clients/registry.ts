import type { ServerMessage, SystemInfo, Utilization } from '../api/protocol.js';
import type { ClientCapacity } from '../scheduling/policy.js';

/** A lease held by a client: one attempt at one rank of one task. */
export interface Lease {
  taskId: number;
  rank: number;
  attempt: number;
  assignmentId: number;
  clientId: string;
  status: 'assigned' | 'training' | 'paused';
  progress: number;
  metrics: Record<string, unknown> | null;
  round: number | null;
  /** When the last progress reached the database (ms), for throttling. */
  lastWrite: number;
  lastSample: number;
  /** Progress not yet written. */
  dirty: boolean;
  /** The task's world size when known (set at claim; absent for leases restored at start). */
  worldSize?: number;
}

/** A lease just placed: assigned, no progress, nothing written yet. */
export function assignedLease(
  at: Pick<Lease, 'taskId' | 'rank' | 'attempt' | 'assignmentId' | 'clientId' | 'worldSize'>,
): Lease {
  return {
    ...at,
    status: 'assigned',
    progress: 0,
    metrics: null,
    round: null,
    lastWrite: 0,
    lastSample: 0,
    dirty: false,
  };
}

/** A client this server instance knows to be connected, or in its grace period after a drop. */
export interface FarmClient {
  id: string;
  tokenId: string | null;
  hardware: Omit<ClientCapacity, 'freeSlots' | 'cordoned' | 'id'>;
  maxTasks: number;
  cordoned: boolean;
  /** How to reach it; null while disconnected (leases kept until CONNECTION_TIMEOUT). */
  send: ((msg: ServerMessage) => void) | null;
  /** The connection behind `send`, so a stale connection's close does not cut a newer one. */
  owner: { close(code: number, reason: string): void } | null;
  /** Last sign of life (message, pong or transfer), ms since the epoch. */
  lastSeen: number;
  leases: Map<number, Lease>;
  utilization: Utilization | null;
  /** Registered the original AI Farm client's way (a bare system-info frame, no max_tasks). */
  original?: boolean;
  /** Tasks whose result it sent lately, newest last (bounded), so late progress is dropped quietly. */
  finished?: number[];
  /**
   * Tasks stopped while it ran them that it is still running: the original client ignores
   * `stop` and trains on, so its slot stays taken until its result for them arrives.
   */
  stoppedRunning?: Set<number> | undefined;
}

/** Tasks a client finished lately that are remembered, so their late progress is dropped quietly. */
const FINISHED_KEPT = 16;

/**
 * Notes that a client is done with a task (its result, or a stop): the original AI Farm
 * client queues progress but sends results directly and ignores stop, so its progress of
 * that task may still arrive, and is then dropped rather than answered with an error.
 */
export function rememberFinished(client: FarmClient, taskId: number): void {
  client.finished = [...(client.finished ?? []).filter((id) => id !== taskId), taskId].slice(-FINISHED_KEPT);
}

/** Tasks a client is running now: its leases, and for the original client what it runs on after a stop. */
export function busySlots(client: FarmClient): number {
  return client.leases.size + (client.stoppedRunning?.size ?? 0);
}

/** Hardware from a system-info object (the original client's shape). */
export function capacityFromSystemInfo(info: SystemInfo): FarmClient['hardware'] {
  const gpus = Array.isArray(info.gpu) ? info.gpu : [];
  return {
    cpuCores: Math.max(1, Number(info.cpu.cores_logical) || 1),
    ramGb: Number(info.ram.total) / 2 ** 30,
    gpuMemoryGb: gpus.map((g) => (Number(g.memory?.total) || 0) / 1024),
  };
}

/**
 * The in-memory working set of clients: who is connected, what they can run, which
 * leases they hold. The database is the source of truth it is rebuilt from at start.
 */
export class ClientRegistry {
  private readonly clients = new Map<string, FarmClient>();
  /** Hardware of every client ever registered, for "no known client can run this". */
  private readonly known = new Map<string, FarmClient['hardware']>();
  /** Changes whenever the known hardware does, so unschedulable notes are rechecked only then. */
  hardwareVersion = 0;

  get(id: string): FarmClient | undefined {
    return this.clients.get(id);
  }

  all(): IterableIterator<FarmClient> {
    return this.clients.values();
  }

  connectedCount(): number {
    let n = 0;
    for (const c of this.clients.values()) if (c.send) n++;
    return n;
  }

  /** Ids of the clients with a live socket to this instance. */
  *connectedIds(): IterableIterator<string> {
    for (const c of this.clients.values()) if (c.send) yield c.id;
  }

  add(client: FarmClient): void {
    this.clients.set(client.id, client);
    this.remember(client.id, client.hardware);
  }

  remember(id: string, hardware: FarmClient['hardware']): void {
    const before = this.known.get(id);
    if (before && JSON.stringify(before) === JSON.stringify(hardware)) return;
    this.known.set(id, hardware);
    this.hardwareVersion++;
  }

  remove(id: string): void {
    this.clients.delete(id);
  }

  knownHardware(): Omit<ClientCapacity, 'freeSlots' | 'cordoned'>[] {
    return [...this.known.entries()].map(([id, h]) => ({ id, ...h }));
  }

  /** Connected clients with their free slots, for the scheduler. */
  capacities(maxTasksPerClient: number): ClientCapacity[] {
    const out: ClientCapacity[] = [];
    for (const c of this.clients.values()) {
      if (!c.send) continue;
      const slots = Math.min(maxTasksPerClient, c.maxTasks) - busySlots(c);
      out.push({ id: c.id, ...c.hardware, freeSlots: Math.max(0, slots), cordoned: c.cordoned });
    }
    return out;
  }

  /** Every lease on a task held through this instance. */
  leasesOf(taskId: number): Lease[] {
    const out: Lease[] = [];
    for (const c of this.clients.values()) {
      const l = c.leases.get(taskId);
      if (l) out.push(l);
    }
    return out;
  }
}
