/**
 * Receives one uploaded update: reads the safetensors header first and refuses a bad one
 * before any of the body is read, then streams the body to a temporary file while hashing
 * it (never holding it in memory), and finally checks that every value is finite.
 */
import type { Readable } from 'node:stream';
import { dtypeSize, isAggregatable } from '../safetensors/dtypes.js';
import { compatible, parseHeader, peekHeaderLength, type SafetensorsHeader } from '../safetensors/header.js';
import { firstNonFinite, scanFinite } from '../safetensors/read.js';
import { AtomicFile } from './atomic-file.js';

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
  try {
    const dataStart = header.dataStart;
    await file.write(prefix.subarray(0, Math.min(prefix.length, dataStart)));
    const body = new BodySink(file, header);
    if (prefix.length > dataStart) {
      const bad = await body.push(prefix.subarray(dataStart));
      if (bad) return await aborted(file, bad);
    }
    o.onBytes?.(file.bytes);
    while (!ended) {
      const r = await it.next();
      if (r.done) break;
      const bad = await body.push(r.value);
      if (bad) return await aborted(file, bad);
      o.onBytes?.(dataStart + body.received);
    }
    const bad = await body.end();
    if (bad) return await aborted(file, bad);
    const digest = await file.seal();
    if (!body.scanned) {
      // Tensors at offsets that split elements across buffers: scan the stored file instead.
      const scan = await scanFinite(file.tmpPath, header);
      if (!scan.ok) return await aborted(file, refuse('non_finite', scan.message, scan.tensor));
    }
    return { ok: true, file, header, digest, bytes: file.bytes };
  } catch (err) {
    await file.abort();
    throw err;
  }
}

async function aborted(file: AtomicFile, r: UploadRefusal): Promise<UploadRefusal> {
  await file.abort();
  return r;
}

/** Body bytes are written in pieces of about this size: one write call per piece, not per packet. */
const WRITE_BYTES = 4 * 1024 * 1024;

/**
 * Collects body bytes into large pieces, writes each, and checks every value of each piece for
 * NaN/Inf on the raw bits as it goes, so the stored file never has to be read again. Pieces end on
 * 4-byte boundaries of the body, so when every tensor starts on a multiple of its element size no
 * element is split between pieces (otherwise `scanned` is false and the caller scans the file).
 */
class BodySink {
  received = 0;
  readonly scanned: boolean;
  private readonly buf = Buffer.allocUnsafe(WRITE_BYTES);
  private fill = 0;
  /** Body offset of buf[0]. */
  private at = 0;
  /** First tensor that may still overlap unscanned bytes. */
  private t = 0;
  private readonly tensors: SafetensorsHeader['tensors'];

  constructor(
    private readonly file: AtomicFile,
    private readonly header: SafetensorsHeader,
  ) {
    this.tensors = header.tensors.filter((t) => t.end > t.begin);
    this.scanned = this.tensors.every((t) => t.begin % dtypeSize(t.dtype) === 0);
  }

  async push(chunk: Uint8Array): Promise<UploadRefusal | null> {
    if (this.received + chunk.length > this.header.bufferBytes) {
      return refuse(
        'file_size_mismatch',
        `the body is longer than the ${this.header.fileBytes} bytes its header declares`,
      );
    }
    this.received += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, WRITE_BYTES - this.fill);
      this.buf.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === WRITE_BYTES) {
        const bad = await this.flush(false);
        if (bad) return bad;
      }
    }
    return null;
  }

  async end(): Promise<UploadRefusal | null> {
    const bad = await this.flush(true);
    if (bad) return bad;
    if (this.received !== this.header.bufferBytes) {
      return refuse(
        'truncated',
        `got ${this.header.dataStart + this.received} bytes; the header declares ${this.header.fileBytes}`,
      );
    }
    return null;
  }

  private async flush(last: boolean): Promise<UploadRefusal | null> {
    const n = last ? this.fill : this.fill - (this.fill % 4);
    if (n === 0) return null;
    const piece = this.buf.subarray(0, n);
    if (this.scanned) {
      const bad = this.scan(piece);
      if (bad) return bad;
    }
    await this.file.write(piece);
    this.buf.copy(this.buf, 0, n, this.fill);
    this.fill -= n;
    this.at += n;
    return null;
  }

  private scan(piece: Uint8Array): UploadRefusal | null {
    const from = this.at;
    const to = from + piece.length;
    while (this.t < this.tensors.length && this.tensors[this.t]!.end <= from) this.t++;
    for (let i = this.t; i < this.tensors.length; i++) {
      const t = this.tensors[i]!;
      if (t.begin >= to) break;
      const s = Math.max(from, t.begin);
      const e = Math.min(to, t.end);
      const k = firstNonFinite(piece.subarray(s - from, e - from), t.dtype);
      if (k >= 0) {
        const element = (s - t.begin) / dtypeSize(t.dtype) + k;
        return refuse(
          'non_finite',
          `tensor "${t.name}" holds a non-finite value at element ${element}`,
          t.name,
        );
      }
    }
    return null;
  }
}
