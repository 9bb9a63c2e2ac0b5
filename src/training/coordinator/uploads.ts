/**
 * The upload use case: an update PUT by a rank, bound to its lease, checked, streamed to disk
 * and journaled exactly once. A retry of an accepted update (same rank and attempt) is answered
 * as a duplicate and changes nothing.
 */
import { unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import type { Principal } from '../../auth/principal.js';
import type { ClientRegistry } from '../../clients/registry.js';
import { AppError, conflict, forbidden } from '../../errors.js';
import type { Database } from '../../storage/schema.js';
import { findUpdate } from '../../storage/training-repo.js';
import { receiveUpload } from '../model-store/receive-upload.js';
import type { AtomicFile } from '../model-store/atomic-file.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { RemoteLease, RoundCoordinator } from './coordinator.js';
import type { Round } from './round.js';
import type { AcceptedUpdate } from './run.js';
import type { TrainingPaths } from './paths.js';

/** Who uploads what: the update's slot, lease and claims (a PUT's, or a resumable upload's). */
export interface UploadMeta {
  taskId: number;
  round: number;
  rank: number;
  attempt: number;
  numSamples: number;
  clientId: string;
  principal: Principal;
  /** X-AI-Farm-Metrics, parsed. */
  metrics: Record<string, unknown> | null;
}

export interface UploadRequest extends UploadMeta {
  contentLength: number | undefined;
  body: Readable;
}

/** A received, checked and sealed update file, ready to be committed and journaled. */
export interface ReceivedUpdate {
  file: AtomicFile;
  header: SafetensorsHeader;
  digest: string;
  bytes: number;
}

/**
 * How often an async update that found its buffer full is offered to the next one: waits of
 * 20 ms doubling to 1 s, about a minute in all (a version of a large model takes a while).
 */
const REQUEUE_TRIES = 64;

export type UploadAnswer =
  | { status: 201; body: { accepted: true; digest: string; bytes: number } }
  | { status: 200; body: { duplicate: true; digest: string; bytes: number } };

export class UploadService {
  /** (task, round, rank) slots with an upload streaming now. */
  private readonly inFlight = new Set<string>();

  constructor(
    private readonly d: {
      db: Kysely<Database>;
      registry: ClientRegistry;
      coordinator: RoundCoordinator;
      paths: TrainingPaths;
      maxUploadBytes: number;
      /** Marks a client alive while its bytes flow. */
      touch: (clientId: string) => void;
      /** Several instances: the lease of a client whose socket another instance holds (src/cluster). */
      remoteLease?: (clientId: string, taskId: number) => Promise<RemoteLease | null>;
    },
  ) {}

  /**
   * The checks before any byte is read: an accepted update of this slot (a duplicate answer,
   * or 409), the lease, the round open. Answers the duplicate or the open round.
   */
  async admit(q: UploadMeta): Promise<{ duplicate: UploadAnswer } | { round: Round }> {
    const { taskId, round, rank, attempt } = q;
    // A retry after a lost answer: the journal already has it, whatever happened since.
    const prior = await findUpdate(this.d.db, taskId, round, rank);
    if (prior) {
      if (Number(prior.attempt) === attempt && prior.client_id === q.clientId) {
        return {
          duplicate: {
            status: 200,
            body: { duplicate: true, digest: prior.digest, bytes: Number(prior.bytes) },
          },
        };
      }
      throw conflict(
        'update_exists',
        `rank ${rank} of round ${round} already has an accepted update (attempt ${prior.attempt})`,
      );
    }
    await this.checkLease(q);
    const open = await this.d.coordinator.round(taskId);
    if (!open) throw conflict('round_closed', `task ${taskId} has no open round`);
    // Sync: the open round only (a late one counted); async: a version not staler than max_staleness.
    await open.checkVersion(round, rank, q.clientId);
    return { round: open };
  }

  /** Marks an upload of (task, round, rank) as streaming; false when one already is. */
  hold(q: UploadMeta): boolean {
    const slot = `${q.taskId}:${q.round}:${q.rank}`;
    if (this.inFlight.has(slot)) return false;
    this.inFlight.add(slot);
    return true;
  }

  release(q: UploadMeta): void {
    this.inFlight.delete(`${q.taskId}:${q.round}:${q.rank}`);
  }

  async receive(q: UploadRequest): Promise<UploadAnswer> {
    const admitted = await this.admit(q);
    if ('duplicate' in admitted) return admitted.duplicate;
    const { round } = admitted;
    if (!this.hold(q)) {
      throw conflict(
        'upload_in_progress',
        `an upload for rank ${q.rank} of round ${q.round} is still streaming`,
      );
    }
    try {
      const got = await receiveUpload(q.body, {
        contentLength: q.contentLength,
        maxBytes: this.d.maxUploadBytes,
        reference: round.reference,
        dir: this.d.paths.incoming(q.taskId),
        onBytes: touchEverySecond(this.d.touch, q.clientId),
      });
      if (!got.ok) throw refusal(got);
      this.d.touch(q.clientId);
      return await this.accept(q, round, got);
    } finally {
      this.release(q);
    }
  }

  /**
   * Commits a received update into its round (which checks again, under its lock, what may have
   * changed while it streamed); the file is removed if it is refused. An async update that finds
   * its buffer full or closing goes into the next one: the round is read again (the owner's has
   * moved on; a follower reads the journal) until it is taken or refused.
   */
  async accept(q: UploadMeta, round: Round, got: ReceivedUpdate): Promise<UploadAnswer & { status: 201 }> {
    const { taskId, rank, attempt } = q;
    let placed: AcceptedUpdate | undefined;
    const place = async (): Promise<AcceptedUpdate> => {
      if (placed) return placed;
      const path = this.d.paths.update(taskId, q.round, rank, attempt);
      await got.file.commit(path);
      placed = {
        round: q.round,
        rank,
        attempt,
        clientId: q.clientId,
        numSamples: q.numSamples,
        path,
        digest: got.digest,
        bytes: got.bytes,
        metrics: q.metrics,
      };
      return placed;
    };
    let taken = false;
    try {
      let open: Round | undefined = round;
      for (let tries = 0; !taken; tries++) {
        if (!open) throw conflict('round_closed', `task ${taskId} has no open round`);
        taken = await open.accept({
          round: q.round,
          rank,
          clientId: q.clientId,
          header: got.header,
          check: () => this.checkLease(q),
          place,
        });
        if (taken) break;
        if (tries >= REQUEUE_TRIES)
          throw conflict('round_closed', `round ${open.number} stayed full: the update was not taken`);
        await delay(Math.min(1000, 20 * 2 ** tries));
        open = await this.d.coordinator.round(taskId);
      }
      return { status: 201, body: { accepted: true, digest: got.digest, bytes: got.bytes } };
    } finally {
      await got.file.abort();
      if (placed && !taken) await unlink(placed.path).catch(() => undefined);
    }
  }

  /** The client must be this token's, connected, and hold the lease (task, rank, attempt). */
  async checkLease(q: UploadMeta): Promise<void> {
    const client = this.d.registry.get(q.clientId);
    if ((!client || !client.send) && this.d.remoteLease) {
      // Through a load balancer the upload may reach an instance other than the socket's.
      const remote = await this.d.remoteLease(q.clientId, q.taskId);
      if (!remote) throw conflict('client_not_connected', `client ${q.clientId} is not connected`);
      if (remote.tokenId !== q.principal.id)
        throw forbidden(`client ${q.clientId} is not connected with this token`);
      if (remote.rank !== q.rank || remote.attempt !== q.attempt) {
        throw conflict(
          'stale_attempt',
          `client ${q.clientId} holds rank ${remote.rank} attempt ${remote.attempt} of task ${q.taskId}, not rank ${q.rank} attempt ${q.attempt}`,
        );
      }
      return;
    }
    if (!client || !client.send) {
      throw conflict('client_not_connected', `client ${q.clientId} is not connected to this server`);
    }
    if (client.tokenId !== q.principal.id) {
      throw forbidden(`client ${q.clientId} is not connected with this token`);
    }
    const lease = client.leases.get(q.taskId);
    if (!lease || lease.assignmentId === 0 || lease.rank !== q.rank || lease.attempt !== q.attempt) {
      throw conflict(
        'stale_attempt',
        lease && lease.assignmentId !== 0
          ? `client ${q.clientId} holds rank ${lease.rank} attempt ${lease.attempt} of task ${q.taskId}, not rank ${q.rank} attempt ${q.attempt}`
          : `client ${q.clientId} holds no lease on task ${q.taskId}`,
      );
    }
  }
}

/** A callback for received bytes that touches the client at most once a second: a long upload keeps its lease alive. */
export function touchEverySecond(touch: (clientId: string) => void, clientId: string): () => void {
  let last = 0;
  return () => {
    const now = Date.now();
    if (now - last < 1000) return;
    last = now;
    touch(clientId);
  };
}

/** The AppError answering an upload whose bytes were refused (naming the tensor when there is one). */
export function refusal(got: { code: string; message: string; status: number; tensor?: string }): AppError {
  return new AppError(got.code, got.message, got.status, got.tensor ? { tensor: got.tensor } : undefined);
}
