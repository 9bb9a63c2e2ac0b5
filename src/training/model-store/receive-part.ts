/**
 * Receives one request's part of a resumable (tus) upload: the bytes from the stored offset
 * on, appended to the upload's part file with the same checks as a whole upload (header
 * first, NaN/Inf, digest), continued from where the previous request stopped. What a request
 * leaves behind is only bytes on disk plus the digests of the whole 4 MiB pieces among them:
 * the next request (maybe after a restart) reads back the unfinished piece from the file and
 * sends it through the checks again from its start, so no hash state needs saving.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DIGEST_PIECE_BYTES, PIECE_DIGEST_BYTES } from '../safetensors/digest.js';
import { parseHeader, peekHeaderLength, type SafetensorsHeader } from '../safetensors/header.js';
import { scanFinite } from '../safetensors/read.js';
import { AtomicFile } from './atomic-file.js';
import { FilePipeline, THREAD_MIN_BYTES, type UploadRefusal } from './file-pipeline.js';
import { checkUploadHeader, MAX_UPLOAD_HEADER_BYTES } from './receive-upload.js';

/** Checksum algorithms accepted in Upload-Checksum (tus checksum extension). */
export const CHECKSUM_ALGORITHMS = ['sha1', 'sha256', 'md5'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

/** What is stored of an upload before this request. */
export interface PartState {
  /** The part file (exists; its first `received` bytes are the upload's). */
  path: string;
  /** Upload-Length. */
  length: number;
  received: number;
  /** sha256 of each whole piece among the received bytes, packed. */
  pieceDigests: Buffer;
}

export interface PartOptions {
  /** The global model's header (or the round's first update's); null when none exists yet. */
  reference: SafetensorsHeader | null;
  /** This request's Upload-Checksum: its body must hash to `expected`. */
  checksum: { algorithm: ChecksumAlgorithm; expected: Buffer } | null;
  /** Called as bytes arrive (liveness). */
  onBytes?: (total: number) => void;
  /** Bodies at least this large are checked on a worker thread (default THREAD_MIN_BYTES). */
  threadMinBytes?: number;
}

/** A refusal; `fatal`: the upload cannot continue (its header or values are wrong). */
export type PartRefusal = UploadRefusal & { fatal: boolean };

export type PartOutcome =
  /** Stored; the upload continues at `received`. */
  | { ok: true; done: false; received: number; pieceDigests: Buffer }
  /** Every byte is in and checked: the file is sealed (fsynced), ready to commit. */
  | { ok: true; done: true; file: AtomicFile; header: SafetensorsHeader; digest: string; bytes: number }
  | PartRefusal;

const refuse = (
  fatal: boolean,
  status: PartRefusal['status'],
  code: string,
  message: string,
  tensor?: string,
): PartRefusal =>
  tensor === undefined
    ? { ok: false, fatal, status, code, message }
    : { ok: false, fatal, status, code, message, tensor };

/** A thrown refusal, to leave the body's read loop. */
class Refused extends Error {
  constructor(readonly refusal: PartRefusal) {
    super(refusal.message);
  }
}

/**
 * Appends `body` (this request's bytes, which start at `st.received`) to the upload. A body
 * cut by the network keeps what arrived, unless the request carried a checksum (then nothing
 * of it counts: it cannot be checked). A checksum that does not match stores nothing (460).
 */
export async function receivePart(body: Readable, st: PartState, o: PartOptions): Promise<PartOutcome> {
  const wholeBytes = (st.pieceDigests.length / PIECE_DIGEST_BYTES) * DIGEST_PIECE_BYTES;
  const check = o.checksum ? createHash(o.checksum.algorithm) : null;
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let bodyBytes = 0;
  let ended = false;
  let cut = false;
  /** The body's next chunk; null at its end, or when the connection was cut. */
  const next = async (): Promise<Buffer | null> => {
    if (ended) return null;
    let r: IteratorResult<Buffer>;
    try {
      r = await it.next();
    } catch {
      cut = true;
      ended = true;
      return null;
    }
    if (r.done) {
      ended = true;
      return null;
    }
    bodyBytes += r.value.length;
    if (st.received + bodyBytes > st.length) {
      throw new Refused(
        refuse(false, 400, 'exceeds_upload_length', `the body goes past Upload-Length (${st.length} bytes)`),
      );
    }
    check?.update(r.value);
    o.onBytes?.(st.received + bodyBytes);
    return r.value;
  };
  /** Whether the body may count: whole, and equal to its checksum when it has one. */
  const bodyRefusal = (): PartRefusal | null => {
    if (!o.checksum) return null;
    if (cut)
      return refuse(false, 400, 'cut_with_checksum', 'the request was cut: its checksum cannot be checked');
    const got = check!.digest();
    if (got.equals(o.checksum.expected)) return null;
    return refuse(
      false,
      460,
      'checksum_mismatch',
      `Upload-Checksum ${o.checksum.algorithm} ${o.checksum.expected.toString('base64')} does not match the body (${got.toString('base64')})`,
    );
  };

  const file = await AtomicFile.reopen(st.path);
  let pipeline: FilePipeline | undefined;
  let sealed = false;
  try {
    // The unfinished piece (or the header so far) is read back and sent through the checks again.
    const pending: Buffer[] = [];
    let have = st.received - wholeBytes;
    if (have > 0) pending.push(await file.readAt(wholeBytes, have));
    const pull = async (need: number): Promise<void> => {
      while (wholeBytes + have < need) {
        const c = await next();
        if (!c) return;
        pending.push(c);
        have += c.length;
      }
    };

    let prefix: Buffer;
    if (wholeBytes === 0) {
      await pull(8);
      const peek = peekHeaderLength(Buffer.concat(pending), st.length, {
        maxHeaderBytes: MAX_UPLOAD_HEADER_BYTES,
      });
      if (!peek.ok && have >= 8) return refuse(true, 400, peek.code, peek.message);
      if (peek.ok) await pull(peek.prefixBytes);
      if (!peek.ok || have < peek.prefixBytes) {
        // The header is not all here yet: store the bytes as they are, checked when it is.
        const bad = bodyRefusal();
        if (bad) return bad;
        const all = Buffer.concat(pending);
        await file.writeAt(all.subarray(st.received), st.received);
        await file.datasync();
        return { ok: true, done: false, received: have, pieceDigests: st.pieceDigests };
      }
      prefix = Buffer.concat(pending).subarray(0, peek.prefixBytes);
    } else {
      const lead = await file.readAt(0, 8);
      const peek = peekHeaderLength(lead, st.length, { maxHeaderBytes: MAX_UPLOAD_HEADER_BYTES });
      if (!peek.ok) return refuse(true, 400, peek.code, peek.message);
      prefix = await file.readAt(0, peek.prefixBytes);
    }
    const parsed = parseHeader(prefix, st.length, { maxHeaderBytes: MAX_UPLOAD_HEADER_BYTES });
    if (!parsed.ok) return refuse(true, 400, parsed.code, parsed.message, parsed.tensor);
    const header = parsed.header;
    if (header.fileBytes !== st.length) {
      return refuse(
        true,
        400,
        'file_size_mismatch',
        `the header declares ${header.fileBytes} bytes; Upload-Length is ${st.length}`,
      );
    }
    const badHeader = checkUploadHeader(header, o.reference);
    if (badHeader) return { ...badHeader, fatal: true };

    const threaded = (o.threadMinBytes ?? THREAD_MIN_BYTES) <= header.fileBytes;
    pipeline = new FilePipeline(file, header, threaded, {
      startAt: wholeBytes,
      pieceDigests: st.pieceDigests,
    });
    if (pending.length > 0) {
      const bad = await pipeline.push(Buffer.concat(pending));
      if (bad) return { ...bad, fatal: true };
    }
    for (let c = await next(); c; c = await next()) {
      const bad = await pipeline.push(c);
      if (bad) return { ...bad, fatal: true };
    }
    const badBody = bodyRefusal();
    if (badBody) return badBody;
    if (pipeline.received < st.length) {
      const p = await pipeline.pause();
      if ('ok' in p) return { ...p, fatal: true };
      return {
        ok: true,
        done: false,
        received: pipeline.received,
        pieceDigests: Buffer.from(p.pieceDigests),
      };
    }
    const end = await pipeline.finish();
    if (!end.ok) return { ...end, fatal: true };
    await pipeline.close();
    const digest = await file.seal(end.digest);
    sealed = true;
    if (!pipeline.scanned) {
      const scan = await scanFinite(file.tmpPath, header);
      if (!scan.ok) return refuse(true, 400, 'non_finite', scan.message, scan.tensor);
    }
    return { ok: true, done: true, file, header, digest, bytes: header.fileBytes };
  } catch (err) {
    if (err instanceof Refused) return err.refusal;
    throw err;
  } finally {
    await pipeline?.close();
    // The part stays for the next request (or for the caller to commit or delete).
    if (!sealed) await file.release();
  }
}
