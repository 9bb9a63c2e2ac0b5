/**
 * Receives one uploaded update: reads the safetensors header first and refuses a bad one
 * before any of the body is read, then streams the body to a temporary file while hashing
 * it (never holding it in memory), and finally checks that every value is finite.
 */
import type { Readable } from 'node:stream';
import { dtypeSize, isAggregatable } from '../safetensors/dtypes.js';
import { compatible, parseHeader, peekHeaderLength, type SafetensorsHeader } from '../safetensors/header.js';
import { sharedMemory, type WasmMemory } from '../safetensors/finite-scan.js';
import { scanFinite } from '../safetensors/read.js';
import { AtomicFile, DIRECT_ALIGN } from './atomic-file.js';
import { threadChecker } from './checker-threads.js';
import {
  PieceChecker,
  type CheckerInit,
  type CheckReply,
  type CheckRequest,
  type ScanTensor,
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
    sink = new FilePipeline(file, header, threaded, threaded && (await file.useDirect()));
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

/** The file is received in pieces of this size: one write call and one message per piece. */
const PIECE_BYTES = 4 * 1024 * 1024;
/** Pieces in flight at once (being hashed, scanned or written) plus the one filling: the memory bound. */
const PIECES = 4;
/** Uploads at least this large are hashed and scanned in a worker thread and written with O_DIRECT. */
export const THREAD_MIN_BYTES = 32 * 1024 * 1024;
/** Buffered bytes written after which writeback to disk is started (fdatasync), so seal has little left. */
const SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/**
 * Copies the upload's bytes into pieces of a shared memory; piece k holds bytes [k x size,
 * (k + 1) x size) of the file. Each full piece is written at its offset in the background and
 * handed to a {@link PieceChecker} (on a worker thread for a large upload) that hashes it and
 * checks every value of the body for NaN/Inf; a piece is reused once both are done. Memory is
 * (PIECES + 1) x PIECE_BYTES (the pieces and the staging piece) whatever the upload's size. A large upload is written with O_DIRECT:
 * from the piece to the disk, no copy into the page cache (the CPU cost that dominated), and
 * little left for the final fsync. Piece boundaries are multiples of 4096 bytes of the file, so
 * when every tensor starts on a multiple of its element size in the file, no element is split
 * between pieces (otherwise `scanned` is false and the caller scans the stored file).
 */
class FilePipeline {
  /** File bytes received so far. */
  received = 0;
  readonly scanned: boolean;
  private readonly memory: WasmMemory;
  private readonly pieceBytes: number;
  private readonly free: number[] = [];
  /** Per piece: pending completions (its write, its check). */
  private readonly busy: number[] = [];
  private readonly pending = new Set<Promise<void>>();
  private readonly checker: { send(req: CheckRequest): void; close(): Promise<void> };
  private wake: (() => void) | null = null;
  private failure: UploadRefusal | Error | null = null;
  private digest: string | null = null;
  /** The piece being filled (ordinary memory: see dispatch) and how full it is. */
  private readonly staging: Buffer;
  private fill = 0;
  /** File offset of the next piece. */
  private at = 0;
  private unsynced = 0;
  private syncing = false;
  private closed = false;

  constructor(
    private readonly file: AtomicFile,
    private readonly header: SafetensorsHeader,
    threaded: boolean,
    private readonly direct: boolean,
  ) {
    const tensors: ScanTensor[] = header.tensors
      .filter((t) => t.end > t.begin)
      .map((t) => ({ name: t.name, dtype: t.dtype, begin: t.begin, end: t.end }));
    this.scanned = tensors.every((t) => (header.dataStart + t.begin) % dtypeSize(t.dtype) === 0);
    const pieces = threaded ? PIECES : 2;
    const align = DIRECT_ALIGN;
    this.pieceBytes = Math.min(PIECE_BYTES, Math.max(align, Math.ceil(header.fileBytes / align) * align));
    this.memory = sharedMemory(pieces * this.pieceBytes);
    this.staging = Buffer.allocUnsafeSlow(this.pieceBytes);
    for (let i = pieces - 1; i >= 0; i--) {
      this.free.push(i);
      this.busy.push(0);
    }
    const init: CheckerInit = { memory: this.memory, tensors, scan: this.scanned };
    this.checker = threaded ? this.threadChecker(init) : this.inlineChecker(init);
  }

  async push(chunk: Uint8Array): Promise<UploadRefusal | null> {
    if (this.received + chunk.length > this.header.fileBytes) {
      return refuse(
        'file_size_mismatch',
        `the body is longer than the ${this.header.fileBytes} bytes its header declares`,
      );
    }
    this.received += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, this.pieceBytes - this.fill);
      Buffer.from(chunk.buffer, chunk.byteOffset + off, n).copy(this.staging, this.fill);
      this.fill += n;
      off += n;
      if (this.fill === this.pieceBytes) {
        const bad = await this.dispatch();
        if (bad) return bad;
      }
    }
    return this.failed();
  }

  /** Sends the last piece, waits for every write and check, and answers the file's sha256. */
  async finish(): Promise<{ ok: true; digest: string } | UploadRefusal> {
    if (this.received !== this.header.fileBytes) {
      return refuse('truncated', `got ${this.received} bytes; the header declares ${this.header.fileBytes}`);
    }
    if (this.fill > 0) {
      const bad = await this.dispatch();
      if (bad) return bad;
    }
    this.checker.send({ op: 'end' });
    while (this.digest === null && this.failure === null) await new Promise<void>((r) => (this.wake = r));
    await this.settle();
    const bad = this.failed();
    if (bad) return bad;
    // The last direct write was padded to a whole block.
    if (this.file.bytes !== this.header.fileBytes) await this.file.truncate(this.header.fileBytes);
    return { ok: true, digest: this.digest! };
  }

  /** Waits for the background writes, then lets the checker go. Safe more than once. */
  async close(): Promise<void> {
    await this.settle();
    if (this.closed) return;
    this.closed = true;
    await this.checker.close();
  }

  private failed(): UploadRefusal | null {
    if (this.failure instanceof Error) throw this.failure;
    return this.failure;
  }

  /**
   * Moves the staged piece into a free piece of the shared memory (waiting for one) and starts
   * its write and its check. Staging first costs one more copy but a fast one: copying into
   * shared memory is fast only between addresses of the same alignment, which socket chunks
   * do not have (a byte-wise copy at about 0.7 s per GiB instead of 0.06 s).
   */
  private async dispatch(): Promise<UploadRefusal | null> {
    while (this.free.length === 0 && this.failure === null) await new Promise<void>((r) => (this.wake = r));
    const bad = this.failed();
    if (bad) return bad;
    const slot = this.free.pop()!;
    const ptr = slot * this.pieceBytes;
    const len = this.fill;
    const at = this.at;
    this.staging.copy(Buffer.from(this.memory.buffer, ptr, len), 0, 0, len);
    // A direct write covers whole blocks: the last piece is padded (and the file cut at finish).
    const out = this.direct ? Math.ceil(len / DIRECT_ALIGN) * DIRECT_ALIGN : len;
    this.busy[slot] = 2;
    this.track(
      this.file.writeAt(new Uint8Array(this.memory.buffer, ptr, out), at, this.direct).then(() => {
        this.release(slot);
        if (this.direct) return;
        this.unsynced += len;
        if (this.unsynced >= SYNC_EVERY_BYTES && !this.syncing) {
          this.unsynced = 0;
          this.syncing = true;
          this.track(this.file.datasync().finally(() => (this.syncing = false)));
        }
      }),
    );
    this.checker.send({ op: 'piece', slot, ptr, len, at: at - this.header.dataStart });
    this.at += len;
    this.fill = 0;
    return null;
  }
  private track(p: Promise<void>): void {
    const q = p.catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
    this.pending.add(q);
    void q.finally(() => this.pending.delete(q));
  }

  private async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private release(slot: number): void {
    if (--this.busy[slot]! === 0) {
      this.free.push(slot);
      this.poke();
    }
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
      case 'free':
        this.release(r.slot);
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

  private inlineChecker(init: CheckerInit): FilePipeline['checker'] {
    const checker = new PieceChecker(init);
    return {
      send: (req) => {
        const reply = checker.handle(req);
        // Answered later, as a thread would: the sender never re-enters itself.
        if (reply) queueMicrotask(() => this.onReply(reply));
      },
      close: async () => undefined,
    };
  }

  private threadChecker(init: CheckerInit): FilePipeline['checker'] {
    const c = threadChecker(init, this.onReply);
    return { send: (req) => c.send(req), close: async () => c.close() };
  }
}
