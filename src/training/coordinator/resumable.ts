/**
 * Resumable uploads of round updates with the tus protocol (tus.io 1.0: core, creation,
 * checksum, expiration, termination). A rank creates an upload on its update URL (POST with
 * Upload-Length), sends the bytes in one or more PATCH requests from the offset HEAD gives, and
 * the last byte commits the update exactly as a PUT would (same checks, same journal). The
 * state lives in `update_uploads` and the part file, so a restarted server resumes it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import type { Kysely } from 'kysely';
import { isAdmin, type Principal } from '../../auth/principal.js';
import { AppError, conflict, forbidden } from '../../errors.js';
import type { Database } from '../../storage/schema.js';
import {
  advanceUpload,
  deleteUpload,
  expiredUploads,
  findUpload,
  insertUpload,
  type UploadRow,
} from '../../storage/upload-repo.js';
import { receivePart, type ChecksumAlgorithm } from '../model-store/receive-part.js';
import type { TrainingPaths } from './paths.js';
import type { UploadAnswer, UploadMeta, UploadService } from './uploads.js';
import { refusal, touchEverySecond } from './uploads.js';

/** Where an upload is: its update's slot (the URL's task, round and rank) and its id. */
export interface UploadAddress {
  taskId: number;
  round: number;
  rank: number;
  uploadId: string;
}

/** What HEAD and PATCH report. */
export interface UploadState {
  length: number;
  received: number;
  expiresAt: Date;
}

/** Expired uploads removed per sweep, at most (the next sweep takes the rest). */
const SWEEP_BATCH = 100;
const SWEEP_EVERY_MS = 60_000;

export class ResumableUploads {
  /** Upload ids with a PATCH running now. */
  private readonly busy = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<void> | null = null;

  constructor(
    private readonly d: {
      db: Kysely<Database>;
      uploads: UploadService;
      paths: TrainingPaths;
      maxUploadBytes: number;
      /** UPLOAD_EXPIRY, in milliseconds. */
      expiryMs: number;
      now: () => number;
      touch: (clientId: string) => void;
    },
  ) {}

  /** tus creation: checks the slot like a PUT would, then stores an empty upload. */
  async create(
    q: UploadMeta & { length: number },
  ): Promise<{ duplicate: UploadAnswer } | { id: string; expiresAt: Date }> {
    if (q.length > this.d.maxUploadBytes) {
      throw new AppError(
        'too_large',
        `Upload-Length ${q.length} exceeds MAX_UPLOAD_BYTES (${this.d.maxUploadBytes})`,
        413,
      );
    }
    const admitted = await this.d.uploads.admit(q);
    if ('duplicate' in admitted) return admitted;
    const id = randomBytes(16).toString('hex');
    const path = this.d.paths.resumablePart(q.taskId, id);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, new Uint8Array(0), { flag: 'wx' });
    const now = this.d.now();
    await insertUpload(this.d.db, {
      id,
      task_id: q.taskId,
      round: q.round,
      rank: q.rank,
      attempt: q.attempt,
      client_id: q.clientId,
      token_id: q.principal.id,
      num_samples: q.numSamples,
      metrics: q.metrics ? JSON.stringify(q.metrics) : null,
      length: q.length,
      received: 0,
      piece_digests: Buffer.alloc(0),
      path,
      created_at: now,
      expires_at: now + this.d.expiryMs,
    });
    return { id, expiresAt: new Date(now + this.d.expiryMs) };
  }

  /** tus HEAD: the offset to continue from. */
  async status(principal: Principal, a: UploadAddress): Promise<UploadState> {
    const row = await this.find(principal, a);
    return { length: row.length, received: row.received, expiresAt: new Date(row.expires_at) };
  }

  /**
   * tus PATCH: appends the body at `offset` (409 unless it is the stored offset). The last
   * byte commits the update (answered with its digest); before, the stored offset is answered.
   */
  async patch(q: {
    principal: Principal;
    address: UploadAddress;
    clientId: string | undefined;
    offset: number;
    checksum: { algorithm: ChecksumAlgorithm; expected: Buffer } | null;
    body: Readable;
  }): Promise<UploadState & { accepted?: { digest: string; bytes: number } }> {
    const row = await this.find(q.principal, q.address);
    if (q.clientId !== undefined && q.clientId !== row.client_id) {
      throw forbidden(`upload ${row.id} belongs to client ${row.client_id}`);
    }
    if (this.busy.has(row.id)) {
      throw new AppError('upload_locked', `upload ${row.id} is receiving another request`, 423);
    }
    if (q.offset !== row.received) {
      throw conflict(
        'offset_mismatch',
        `Upload-Offset ${q.offset} is not the upload's offset ${row.received}`,
        {
          offset: row.received,
        },
      );
    }
    const meta = this.meta(row, q.principal);
    this.busy.add(row.id);
    let held = false;
    try {
      const admitted = await this.d.uploads.admit(meta);
      if ('duplicate' in admitted) {
        // Already accepted from this client and attempt (the answer to the last PATCH was lost,
        // or the server stopped before it deleted the row): done, as a PUT's duplicate is.
        await this.remove(row);
        const { digest, bytes } = admitted.duplicate.body;
        return {
          length: row.length,
          received: row.length,
          expiresAt: new Date(row.expires_at),
          accepted: { digest, bytes },
        };
      }
      if (!this.d.uploads.hold(meta)) {
        throw conflict(
          'upload_in_progress',
          `an upload for rank ${row.rank} of round ${row.round} is still streaming`,
        );
      }
      held = true;
      const got = await receivePart(
        q.body,
        { path: row.path, length: row.length, received: row.received, pieceDigests: row.piece_digests },
        {
          reference: admitted.round.reference,
          checksum: q.checksum,
          onBytes: touchEverySecond(this.d.touch, row.client_id),
        },
      );
      if (!got.ok) {
        if (got.fatal) await this.remove(row);
        throw refusal(got);
      }
      this.d.touch(row.client_id);
      const expiresAt = this.d.now() + this.d.expiryMs;
      if (!got.done) {
        const moved = await advanceUpload(this.d.db, row.id, row.received, {
          received: got.received,
          piece_digests: got.pieceDigests,
          expires_at: expiresAt,
        });
        if (!moved) throw conflict('offset_mismatch', `upload ${row.id} moved on meanwhile`);
        return { length: row.length, received: got.received, expiresAt: new Date(expiresAt) };
      }
      try {
        const answer = await this.d.uploads.accept(meta, admitted.round, got);
        await deleteUpload(this.d.db, row.id);
        return {
          length: row.length,
          received: row.length,
          expiresAt: new Date(expiresAt),
          accepted: answer.body,
        };
      } catch (err) {
        // Refused at the last step (round closed, lease gone, another update): nothing to resume.
        await this.remove(row);
        throw err;
      }
    } finally {
      if (held) this.d.uploads.release(meta);
      this.busy.delete(row.id);
    }
  }

  /** tus termination (DELETE): drops the upload and its part. */
  async terminate(principal: Principal, a: UploadAddress): Promise<void> {
    const row = await this.find(principal, a);
    if (this.busy.has(row.id)) {
      throw new AppError('upload_locked', `upload ${row.id} is receiving another request`, 423);
    }
    await this.remove(row);
  }

  /** Removes uploads past their expiry (a minute apart from start until stop). */
  start(): void {
    this.timer = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.sweeping;
  }

  /** Removes up to SWEEP_BATCH expired uploads; answers how many. */
  async sweep(): Promise<number> {
    let n = 0;
    const run = (async () => {
      const rows = await expiredUploads(this.d.db, this.d.now(), SWEEP_BATCH);
      for (const row of rows) {
        if (this.busy.has(row.id)) continue;
        await this.remove(row);
        n++;
      }
    })();
    this.sweeping = run.catch(() => undefined);
    await run;
    return n;
  }

  private async remove(row: UploadRow): Promise<void> {
    await deleteUpload(this.d.db, row.id);
    await rm(row.path, { force: true });
  }

  /** The upload at this address, if the principal may use it: 404 unknown, 410 expired, 403 not theirs. */
  private async find(principal: Principal, a: UploadAddress): Promise<UploadRow> {
    const row = /^[0-9a-f]{32}$/.test(a.uploadId) ? await findUpload(this.d.db, a.uploadId) : undefined;
    if (!row || row.task_id !== a.taskId || row.round !== a.round || row.rank !== a.rank) {
      throw new AppError(
        'upload_not_found',
        `no upload ${a.uploadId} for rank ${a.rank} of round ${a.round}`,
        404,
      );
    }
    if (row.token_id !== principal.id && !isAdmin(principal)) {
      throw forbidden(`upload ${a.uploadId} was created with another token`);
    }
    if (row.expires_at < this.d.now()) {
      throw new AppError('upload_expired', `upload ${a.uploadId} expired; create a new one`, 410);
    }
    return row;
  }

  private meta(row: UploadRow, principal: Principal): UploadMeta {
    return {
      taskId: row.task_id,
      round: row.round,
      rank: row.rank,
      attempt: row.attempt,
      numSamples: row.num_samples,
      clientId: row.client_id,
      // The lease check compares the client's token with the caller's: the creator's token.
      principal: { ...principal, id: row.token_id },
      metrics: row.metrics === null ? null : (JSON.parse(row.metrics) as Record<string, unknown>),
    };
  }
}
