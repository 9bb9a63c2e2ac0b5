/**
 * Receives one uploaded update: reads the safetensors header first and refuses a bad one
 * before any of the body is read, then streams the body to a temporary file while hashing
 * it (never holding it in memory), and finally checks that every value is finite.
 */
import type { Readable } from 'node:stream';
import { DIGEST_PIECE_BYTES } from '../safetensors/digest.js';
import { dtypeSize, isAggregatable } from '../safetensors/dtypes.js';
import { compatible, parseHeader, peekHeaderLength, type SafetensorsHeader } from '../safetensors/header.js';
import { scanFinite } from '../safetensors/read.js';
import { AtomicFile } from './atomic-file.js';
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

/** Largest safetensors JSON header accepted in an upload (thousands of tensors fit in far less). */
export const MAX_UPLOAD_HEADER_BYTES = 16 * 1024 * 1024;

export interface ReceiveOptions {
  /** Content-Length when the client sent one (chunked uploads have none). */
  contentLength: number | undefined;
  /** MAX_UPLOAD_BYTES. */
  maxBytes: number;
  /** The global model's header (or the round's first update's); null when none exists yet. */
  reference: SafetensorsHeader | null;
  /** Folder for the temporary file (same filesystem as the final one, for an atomic rename). */
  dir: string;
  /** Called as bytes arrive (liveness: an uploading client is not silent). */
  onBytes?: (total: number) => void;
  /** Bodies at least this large are hashed and scanned in a worker thread (default THREAD_MIN_BYTES). */
  threadMinBytes?: number;
}

/** Why an upload was refused. */
export interface UploadRefusal {
  ok: false;
  status: 400 | 413;
  code: string;
  message: string;
  tensor?: string;
}

export type ReceiveOutcome =
  { ok: true; file: AtomicFile; header: SafetensorsHeader; digest: string; bytes: number } | UploadRefusal;

const refuse = (code: string, message: string, tensor?: string, status: 400 | 413 = 400): UploadRefusal =>
  tensor === undefined ? { ok: false, status, code, message } : { ok: false, status, code, message, tensor };

/** The file size a header implies when the body length is not known in advance. */
function impliedFileBytes(prefix: Uint8Array, prefixBytes: number): number {
  try {
    const json = JSON.parse(new TextDecoder().decode(prefix.subarray(8, prefixBytes))) as Record<
      string,
      unknown
    >;
    let end = 0;
    for (const [k, v] of Object.entries(json)) {
      const offsets = k === '__metadata__' ? undefined : (v as { data_offsets?: unknown })?.data_offsets;
      if (Array.isArray(offsets) && typeof offsets[1] === 'number') end = Math.max(end, offsets[1]);
    }
    return prefixBytes + end;
  } catch {
    return prefixBytes; // parseHeader reports the real problem
  }
}

/** Checks a parsed upload header against the reference and the dtypes aggregation supports. */
export function checkUploadHeader(
  header: SafetensorsHeader,
  reference: SafetensorsHeader | null,
): UploadRefusal | null {
  const odd = header.tensors.find((t) => !isAggregatable(t.dtype));
  if (odd) {
    return refuse(
      'unsupported_dtype',
      `tensor "${odd.name}" is ${odd.dtype}; updates must be F32, F16 or BF16`,
      odd.name,
    );
  }
  if (header.tensors.length === 0) return refuse('empty_model', 'the update holds no tensor');
  if (reference) {
    const c = compatible(reference, header);
    if (!c.ok) return refuse(c.code, `update does not match the global model: ${c.message}`, c.tensor);
  }
  return null;
}

/** Streams `body` to a temporary file after validating its header; the caller commits or aborts it. */
export async function receiveUpload(body: Readable, o: ReceiveOptions): Promise<ReceiveOutcome> {
  if (o.contentLength !== undefined && o.contentLength > o.maxBytes) {
    return refuse(
      'too_large',
      `upload of ${o.contentLength} bytes exceeds MAX_UPLOAD_BYTES (${o.maxBytes})`,
      undefined,
      413,
    );
  }
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const pending: Buffer[] = [];
  let have = 0;
  let ended = false;
  const pull = async (need: number): Promise<void> => {
    while (have < need && !ended) {
      const r = await it.next();
      if (r.done) ended = true;
      else {
        pending.push(r.value);
        have += r.value.length;
      }
    }
  };
  const known = o.contentLength ?? Number.MAX_SAFE_INTEGER;
  await pull(8);
  let prefix = Buffer.concat(pending);
  const peek = peekHeaderLength(prefix, Math.min(known, ended ? have : known), {
    maxHeaderBytes: MAX_UPLOAD_HEADER_BYTES,
  });
  if (!peek.ok) return refuse(peek.code, peek.message);
  await pull(peek.prefixBytes);
  prefix = Buffer.concat(pending);
  if (prefix.length < peek.prefixBytes) {
    return refuse(
      'header_exceeds_file',
      `header length ${peek.headerBytes} exceeds the upload (${prefix.length} bytes)`,
    );
  }
  const fileBytes = o.contentLength ?? impliedFileBytes(prefix, peek.prefixBytes);
  const parsed = parseHeader(prefix.subarray(0, peek.prefixBytes), fileBytes, {
    maxHeaderBytes: MAX_UPLOAD_HEADER_BYTES,
  });
  if (!parsed.ok) return refuse(parsed.code, parsed.message, parsed.tensor);
  const header = parsed.header;
  if (header.fileBytes > o.maxBytes) {
    return refuse(
      'too_large',
      `the update declares ${header.fileBytes} bytes, over MAX_UPLOAD_BYTES (${o.maxBytes})`,
      undefined,
      413,
    );
  }
  const bad = checkUploadHeader(header, o.reference);
  if (bad) return bad;

  const file = await AtomicFile.create(o.dir);
  let sink: FilePipeline | undefined;
  try {
    const threaded = (o.threadMinBytes ?? THREAD_MIN_BYTES) <= header.fileBytes;
    sink = new FilePipeline(file, header, threaded);
    // Everything read so far (the header and maybe the start of the body) is the file's start.
    const bad = await sink.push(prefix);
    if (bad) return await aborted(file, sink, bad);
    o.onBytes?.(sink.received);
    while (!ended) {
      const r = await it.next();
      if (r.done) break;
      const bad = await sink.push(r.value);
      if (bad) return await aborted(file, sink, bad);
      o.onBytes?.(sink.received);
    }
    const end = await sink.finish();
    if (!end.ok) return await aborted(file, sink, end);
    await sink.close();
    const digest = await file.seal(end.digest);
    if (!sink.scanned) {
      // Tensors at offsets that split elements across pieces: scan the stored file instead.
      const scan = await scanFinite(file.tmpPath, header);
      if (!scan.ok) return await aborted(file, sink, refuse('non_finite', scan.message, scan.tensor));
    }
    return { ok: true, file, header, digest, bytes: file.bytes };
  } catch (err) {
    await sink?.close();
    await file.abort();
    throw err;
  } finally {
    await sink?.close();
  }
}

async function aborted(file: AtomicFile, sink: FilePipeline, r: UploadRefusal): Promise<UploadRefusal> {
  await sink.close();
  await file.abort();
  return r;
}

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
class FilePipeline {
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
  private closed = false;

  constructor(
    private readonly file: AtomicFile,
    private readonly header: SafetensorsHeader,
    threaded: boolean,
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
    };
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
