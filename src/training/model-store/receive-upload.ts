/**
 * Receives one uploaded update: reads the safetensors header first and refuses a bad one
 * before any of the body is read, then streams the body to a temporary file while hashing
 * it (never holding it in memory), and finally checks that every value is finite.
 */
import type { Readable } from 'node:stream';
import { isAggregatable } from '../safetensors/dtypes.js';
import { compatible, parseHeader, peekHeaderLength, type SafetensorsHeader } from '../safetensors/header.js';
import { scanFinite } from '../safetensors/read.js';
import { AtomicFile } from './atomic-file.js';
import { FilePipeline, THREAD_MIN_BYTES, type UploadRefusal } from './file-pipeline.js';

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

export type { UploadRefusal } from './file-pipeline.js';

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
