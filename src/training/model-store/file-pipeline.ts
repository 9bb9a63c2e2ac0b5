/**
 * The receiving end of an upload's bytes: hands them to a {@link PieceWriter} (on a worker
 * thread for large uploads) that scans, hashes and writes them; see FilePipeline.
 */
import { DIGEST_PIECE_BYTES } from '../safetensors/digest.js';
import { dtypeSize } from '../safetensors/dtypes.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { AtomicFile } from './atomic-file.js';
import { threadChecker } from './checker-threads.js';
import {
  DIRECT_ALIGN,
  PieceWriter,
  type CheckerInit,
  type CheckReply,
  type CheckRequest,
  type ScanTensor,
  type WriterFile,
} from './upload-check.js';

/** Why an upload was refused (460: a tus request's Upload-Checksum did not match its body). */
export interface UploadRefusal {
  ok: false;
  status: 400 | 409 | 413 | 460;
  code: string;
  message: string;
  tensor?: string;
}

const refuse = (code: string, message: string, tensor?: string): UploadRefusal =>
  tensor === undefined
    ? { ok: false, status: 400, code, message }
    : { ok: false, status: 400, code, message, tensor };

/** The file is written in pieces of the digest's piece size: one write call and one hash per piece. */
const PIECE_BYTES = DIGEST_PIECE_BYTES;
/** Pieces a large upload's writer holds (being written, or filling): its memory. */
const PIECES = 4;
/** Uploads at least this large are checked and written in a worker thread, with O_DIRECT. */
export const THREAD_MIN_BYTES = 32 * 1024 * 1024;
/** Chunks are sent to the writer in batches of about this many bytes (fewer messages). */
const BATCH_BYTES = 1024 * 1024;
/** Bytes sent to the writer and not yet in its pieces, at most: the receiver then stops reading. */
const MAX_AHEAD_BYTES = 8 * 1024 * 1024;

/**
 * Hands the upload's bytes, in the chunks they arrive in, to a {@link PieceWriter} that copies
 * them into pieces of its own memory, scans every value of the body for NaN/Inf, hashes the
 * bytes and writes each piece at its offset. For a large upload the writer runs on a worker
 * thread and the chunks' buffers are moved there, not copied: the receiving thread reads the
 * socket and nothing else (it used to copy every byte twice, into a staging piece and then into
 * shared memory). Memory is bounded whatever the upload's size: MAX_AHEAD_BYTES of chunks on
 * their way plus the writer's pieces. The writer writes with O_DIRECT where the filesystem
 * allows (no copy into the page cache). Piece boundaries are multiples of 4096 bytes of the
 * file, so when every tensor starts on a multiple of its element size in the file, no element
 * is split between pieces (otherwise `scanned` is false and the caller scans the stored file).
 */
export class FilePipeline {
  /** File bytes received so far. */
  received = 0;
  readonly scanned: boolean;
  private readonly writer: { send(req: CheckRequest): void; close(): Promise<void> };
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  /** Bytes sent to the writer, and how many of them it has taken into its pieces. */
  private sent = 0;
  private taken = 0;
  private wake: (() => void) | null = null;
  private failure: UploadRefusal | Error | null = null;
  private digest: string | null = null;
  private paused: { pieceDigests: Uint8Array; wholeBytes: number } | null = null;
  private closed = false;

  /**
   * `resume`: a resumable upload continuing at `startAt` (a whole number of pieces: the bytes
   * from there on are sent again from the start of their piece) with the digests of the pieces
   * before it.
   */
  constructor(
    private readonly file: AtomicFile,
    private readonly header: SafetensorsHeader,
    threaded: boolean,
    resume?: { startAt: number; pieceDigests: Uint8Array },
  ) {
    const tensors: ScanTensor[] = header.tensors
      .filter((t) => t.end > t.begin)
      .map((t) => ({ name: t.name, dtype: t.dtype, begin: t.begin, end: t.end }));
    this.scanned = tensors.every((t) => (header.dataStart + t.begin) % dtypeSize(t.dtype) === 0);
    const align = DIRECT_ALIGN;
    const init: CheckerInit = {
      tensors,
      scan: this.scanned,
      dataStart: header.dataStart,
      pieceBytes: Math.min(PIECE_BYTES, Math.max(align, Math.ceil(header.fileBytes / align) * align)),
      pieces: threaded ? PIECES : 2,
      ...(resume ? { startAt: resume.startAt, pieceDigests: resume.pieceDigests } : {}),
    };
    this.received = resume?.startAt ?? 0;
    this.writer = threaded ? threadChecker(init, file.tmpPath, this.onReply) : this.inlineWriter(init);
  }

  /** Hands `chunk` on (it must not be used afterwards: its buffer may move to another thread). */
  async push(chunk: Uint8Array): Promise<UploadRefusal | null> {
    if (this.received + chunk.length > this.header.fileBytes) {
      return refuse(
        'file_size_mismatch',
        `the body is longer than the ${this.header.fileBytes} bytes its header declares`,
      );
    }
    this.received += chunk.length;
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= BATCH_BYTES) this.sendBatch();
    while (this.sent - this.taken >= MAX_AHEAD_BYTES && this.failure === null) await this.sleep();
    return this.failed();
  }

  /** Sends what is left, waits for every write and check, and answers the file's sha256. */
  async finish(): Promise<{ ok: true; digest: string } | UploadRefusal> {
    if (this.received !== this.header.fileBytes) {
      return refuse('truncated', `got ${this.received} bytes; the header declares ${this.header.fileBytes}`);
    }
    this.sendBatch();
    this.writer.send({ op: 'end' });
    while (this.digest === null && this.failure === null) await this.sleep();
    const bad = this.failed();
    if (bad) return bad;
    // Records the writer's length, and cuts a last direct write padded to a whole block.
    await this.file.truncate(this.header.fileBytes);
    return { ok: true, digest: this.digest! };
  }

  /**
   * Sends what is left and has every byte received written and on the disk (fdatasync),
   * without finishing the file: a resumable upload's request ended. Answers the digests of the
   * whole pieces received (packed) and the bytes they cover. The pipeline is done afterwards.
   */
  async pause(): Promise<{ pieceDigests: Uint8Array; wholeBytes: number } | UploadRefusal> {
    this.sendBatch();
    this.writer.send({ op: 'pause' });
    while (this.paused === null && this.failure === null) await this.sleep();
    const bad = this.failed();
    if (bad) return bad;
    return this.paused!;
  }

  /** Stops the writer and waits until none of its writes is in flight. Safe more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writer.close();
  }

  private sendBatch(): void {
    if (this.batch.length === 0) return;
    this.sent += this.batchBytes;
    this.writer.send({ op: 'chunks', chunks: this.batch });
    this.batch = [];
    this.batchBytes = 0;
  }

  private sleep(): Promise<void> {
    return new Promise<void>((r) => (this.wake = r));
  }

  private failed(): UploadRefusal | null {
    if (this.failure instanceof Error) throw this.failure;
    return this.failure;
  }

  private fail(f: UploadRefusal | Error): void {
    this.failure ??= f;
    this.poke();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private onReply = (r: CheckReply): void => {
    switch (r.op) {
      case 'took':
        this.taken += r.bytes;
        this.poke();
        break;
      case 'non_finite':
        this.fail(
          refuse(
            'non_finite',
            `tensor "${r.tensor}" holds a non-finite value at element ${r.element}`,
            r.tensor,
          ),
        );
        break;
      case 'digest':
        this.digest = r.digest;
        this.poke();
        break;
      case 'paused':
        this.paused = { pieceDigests: r.pieceDigests, wholeBytes: r.wholeBytes };
        this.poke();
        break;
      case 'error':
        this.fail(new Error(`upload check failed: ${r.message}`));
        break;
    }
  };

  /** A writer on this thread, writing through the caller's file (small uploads: no O_DIRECT). */
  private inlineWriter(init: CheckerInit): FilePipeline['writer'] {
    const file: WriterFile = {
      direct: false,
      write: (bytes, position) => this.file.writeAt(bytes, position),
      datasync: () => this.file.datasync(),
      close: async () => undefined,
    };
    // Replies come later, as from a thread: the sender never re-enters itself.
    const writer = new PieceWriter(init, Promise.resolve(file), (r) => queueMicrotask(() => this.onReply(r)));
    return { send: (req) => writer.handle(req), close: () => writer.close() };
  }
}
