/**
 * The CPU and disk side of receiving an upload: the body's bytes, handed over in the chunks
 * they arrived in, are copied into pieces of a WebAssembly memory; each full piece is tested for
 * NaN/Inf (every value of the body, with SIMD), hashed (the piece's sha256 with node:crypto,
 * in place in this thread; the file's digest is the sha256 of the pieces' digests,
 * safetensors/digest.ts) and written at its offset in the file. WebCrypto's digest would hash
 * pieces on libuv's threads, several at once, but it copies each piece and cost 1.45-1.9x the
 * CPU per byte here: on 2 cores shared with the socket and the sender, CPU is the limit, and
 * uploads running at once are spread over several checker threads anyway (checker-threads.ts).
 * It runs in a worker thread for large uploads
 * (upload-check.worker.ts), where the chunks arrive transferred, not copied, so the receiving
 * thread only reads the socket; or inline for small ones. The messages are the same either way.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { digestOfPieces, unpackPieces } from '../safetensors/digest.js';
import type { Dtype } from '../safetensors/dtypes.js';
import { dtypeSize } from '../safetensors/dtypes.js';
import {
  createFiniteScanner,
  scanMemory,
  type FiniteScanner,
  type WasmMemory,
} from '../safetensors/finite-scan.js';

/** Address, length and file offset alignment that O_DIRECT writes need (a page: safe for any disk). */
export const DIRECT_ALIGN = 4096;
/** Buffered bytes written after which writeback to disk is started (fdatasync), so the fsync has little left. */
const SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/** A tensor's byte range in the body (after the header). */
export interface ScanTensor {
  name: string;
  dtype: Dtype;
  begin: number;
  end: number;
}

export interface CheckerInit {
  /** Tensors in body order; empty ones may be left out. */
  tensors: ScanTensor[];
  /** False when some tensor splits elements across pieces: the caller scans the stored file instead. */
  scan: boolean;
  /** Where the body starts in the file (header bytes are hashed and written, not scanned). */
  dataStart: number;
  /**
   * Bytes per piece and pieces: the writer's memory. Each piece is one piece of the digest, so
   * for the model file digest a piece is DIGEST_PIECE_BYTES, or, for a file shorter than that,
   * the file's length rounded up to DIRECT_ALIGN (its only piece).
   */
  pieceBytes: number;
  pieces: number;
  /**
   * A resumed upload: the file offset of the first byte sent (a multiple of pieceBytes)
   * and the digests of the pieces before it, packed (safetensors/digest.ts). Default: 0, none.
   */
  startAt?: number;
  pieceDigests?: Uint8Array;
}

export type CheckRequest =
  /** The next bytes of the file, in order (on a thread: their buffers transferred). */
  | { op: 'chunks'; chunks: Uint8Array[] }
  /** No more bytes: write the last piece, wait for every write, answer the digest. */
  | { op: 'end' }
  /**
   * No more bytes for now (a resumable upload's request ended): write the partly filled piece
   * without hashing or scanning it, wait for every write and hash, fdatasync, and answer
   * `paused` with the digests of the whole pieces. The writer is done afterwards.
   */
  | { op: 'pause' };

export type CheckReply =
  /** `bytes` more of the sent bytes are in pieces: the sender may send that many more. */
  | { op: 'took'; bytes: number }
  | { op: 'non_finite'; tensor: string; element: number }
  /** Every byte is written (the last piece maybe padded to DIRECT_ALIGN: the caller cuts the file). */
  | { op: 'digest'; digest: string }
  /** After `pause`: every byte sent is on the disk; the digests of every whole piece so far, packed. */
  | { op: 'paused'; pieceDigests: Uint8Array; wholeBytes: number }
  | { op: 'error'; message: string };

/** How a writer reaches the file. */
export interface WriterFile {
  /** True when writes go to the disk with O_DIRECT (pieces are then padded to whole blocks). */
  readonly direct: boolean;
  /** Writes all of `bytes` at `position`. */
  write(bytes: Uint8Array, position: number): Promise<void>;
  /** Starts writeback of buffered writes (fdatasync). */
  datasync(): Promise<void>;
  /** Closes what the writer opened (nothing when the file is the caller's). */
  close(): Promise<void>;
}

/**
 * Opens `path` (an existing file) for a writer of its own: with O_DIRECT where the platform and
 * the filesystem allow it (no copy into the page cache, the CPU cost that dominated; tmpfs
 * refuses it), plus an ordinary descriptor for the writes O_DIRECT still refuses (EINVAL).
 * Opened here rather than shared with the caller: a descriptor number the caller closed and the
 * process reused could otherwise receive a late write.
 */
export async function openWriterFile(path: string): Promise<WriterFile> {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  const plain = await open(path, constants.O_WRONLY);
  let direct: FileHandle | null = null;
  if (flag !== undefined) direct = await open(path, constants.O_WRONLY | flag).catch(() => null);
  const writeAll = async (fh: FileHandle, bytes: Uint8Array, position: number) => {
    for (let done = 0; done < bytes.length;) {
      const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
      done += bytesWritten;
    }
  };
  return {
    direct: direct !== null,
    async write(bytes, position) {
      if (direct) {
        try {
          return await writeAll(direct, bytes, position);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        }
      }
      await writeAll(plain, bytes, position);
    },
    datasync: () => plain.datasync(),
    async close() {
      await direct?.close().catch(() => undefined);
      await plain.close().catch(() => undefined);
    },
  };
}

/**
 * Receives one upload's bytes in order, into `pieces` pieces of its memory; a piece is reused
 * once its write is done. Requests are handled one after the other (a chunk waits for a free
 * piece), replies go to `reply`. Memory: the pieces, whatever the upload's size.
 */
export class PieceWriter {
  /** Digests of the pieces so far, by piece index (filled as their hashes finish, in any order). */
  private readonly digests: Uint8Array[] = [];
  private readonly memory: WasmMemory;
  private readonly scanner: FiniteScanner;
  private readonly tensors: ScanTensor[];
  private readonly queue: CheckRequest[] = [];
  private readonly free: number[] = [];
  private readonly writes = new Set<Promise<void>>();
  private file: WriterFile | null = null;
  /** A run is handling the queue (`running`: its promise, for close). */
  private busy = false;
  private running: Promise<void> | null = null;
  /** The piece being filled, how full it is, and the file offset of its first byte. */
  private slot = -1;
  private fill = 0;
  private at = 0;
  /** First tensor that may still overlap unscanned bytes. */
  private t = 0;
  private unsynced = 0;
  private syncing = false;
  private failed = false;
  private closed = false;

  constructor(
    private readonly init: CheckerInit,
    private readonly opening: Promise<WriterFile>,
    private readonly reply: (r: CheckReply) => void,
  ) {
    // A file that cannot be opened is answered as an error by run (or ignored by close).
    opening.catch(() => undefined);
    this.memory = scanMemory(init.pieces * init.pieceBytes, false);
    this.scanner = createFiniteScanner(this.memory);
    this.tensors = init.tensors.filter((t) => t.end > t.begin);
    for (let i = init.pieces - 1; i >= 0; i--) this.free.push(i);
    this.at = init.startAt ?? 0;
    if (init.pieceDigests) this.digests.push(...unpackPieces(init.pieceDigests));
    if (this.at !== this.digests.length * init.pieceBytes) {
      throw new RangeError(`resuming at ${this.at} with ${this.digests.length} pieces' digests`);
    }
  }

  /** Queues a request; they are handled in order. */
  handle(req: CheckRequest): void {
    if (this.closed) return;
    this.queue.push(req);
    if (this.busy) return;
    this.busy = true;
    this.running = this.run();
  }

  /** Stops: drops what is queued, waits for the writes in flight, closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    await this.running;
    await this.settle();
    await (await this.opening.catch(() => null))?.close();
  }

  private async run(): Promise<void> {
    try {
      this.file ??= await this.opening;
      for (let req = this.queue.shift(); req && !this.closed; req = this.queue.shift()) {
        if (req.op === 'chunks') {
          let bytes = 0;
          for (const c of req.chunks) {
            bytes += c.length;
            if (!this.failed) await this.take(c);
          }
          this.reply({ op: 'took', bytes });
        } else if (req.op === 'end') {
          if (!this.failed && this.fill > 0) this.flush();
          await this.settle();
          if (!this.failed) this.reply({ op: 'digest', digest: digestOfPieces(this.digests) });
        } else {
          const wholeBytes = this.at;
          if (!this.failed && this.fill > 0) this.writeRaw();
          await this.settle();
          if (!this.failed) await this.file.datasync();
          if (!this.failed) {
            const pieceDigests = Buffer.concat(this.digests);
            this.reply({ op: 'paused', pieceDigests, wholeBytes });
          }
        }
      }
    } catch (err) {
      this.failed = true;
      this.reply({ op: 'error', message: err instanceof Error ? err.message : String(err) });
    } finally {
      // In the same step as the loop's last look at the queue: a request queued after it
      // starts a new run (a flag cleared a microtask later could strand it).
      this.busy = false;
    }
  }

  /** Copies a chunk into pieces (a plain memcpy: the memory is not shared), flushing full ones. */
  private async take(chunk: Uint8Array): Promise<void> {
    const size = this.init.pieceBytes;
    for (let off = 0; off < chunk.length && !this.failed;) {
      if (this.slot < 0) {
        while (this.free.length === 0 && !this.failed) await Promise.race(this.writes);
        if (this.failed) return;
        this.slot = this.free.pop()!;
      }
      const n = Math.min(chunk.length - off, size - this.fill);
      new Uint8Array(this.memory.buffer, this.slot * size + this.fill, n).set(chunk.subarray(off, off + n));
      this.fill += n;
      off += n;
      if (this.fill === size) this.flush();
    }
  }

  /** Scans and hashes the filled piece and starts its write. */
  private flush(): void {
    const file = this.file!;
    const slot = this.slot;
    const ptr = slot * this.init.pieceBytes;
    const len = this.fill;
    const at = this.at;
    this.slot = -1;
    this.fill = 0;
    this.at += len;
    const bad = this.init.scan ? this.scan(ptr, len, at - this.init.dataStart) : null;
    if (bad) {
      this.failed = true;
      this.free.push(slot);
      this.reply(bad);
      return;
    }
    const index = Math.floor(at / this.init.pieceBytes);
    this.digests[index] = createHash('sha256')
      .update(new Uint8Array(this.memory.buffer, ptr, len))
      .digest();
    // A direct write covers whole blocks: the last piece is padded (the caller cuts the file).
    const out = file.direct ? Math.ceil(len / DIRECT_ALIGN) * DIRECT_ALIGN : len;
    this.track(
      file.write(new Uint8Array(this.memory.buffer, ptr, out), at).then(() => {
        this.free.push(slot);
        if (file.direct) return;
        this.unsynced += len;
        if (this.unsynced >= SYNC_EVERY_BYTES && !this.syncing) {
          this.unsynced = 0;
          this.syncing = true;
          this.track(file.datasync().finally(() => (this.syncing = false)));
        }
      }),
    );
  }

  /**
   * Writes the partly filled piece as it is (a resumable upload's request ended inside it): not
   * hashed or scanned, since its bytes are read back and sent again, from its start, when the
   * upload resumes.
   */
  private writeRaw(): void {
    const file = this.file!;
    const slot = this.slot;
    const ptr = slot * this.init.pieceBytes;
    const len = this.fill;
    this.slot = -1;
    this.fill = 0;
    const out = file.direct ? Math.ceil(len / DIRECT_ALIGN) * DIRECT_ALIGN : len;
    this.track(
      file.write(new Uint8Array(this.memory.buffer, ptr, out), this.at).then(() => void this.free.push(slot)),
    );
  }

  private track(p: Promise<void>): void {
    const q = p.catch((err: unknown) => {
      if (!this.failed) {
        this.failed = true;
        this.reply({ op: 'error', message: err instanceof Error ? err.message : String(err) });
      }
    });
    this.writes.add(q);
    void q.finally(() => this.writes.delete(q));
  }

  private async settle(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes]);
  }

  /** The first non-finite value in memory [ptr, ptr + len), body bytes [from, from + len). */
  private scan(ptr: number, len: number, from: number): CheckReply | null {
    const to = from + len;
    while (this.t < this.tensors.length && this.tensors[this.t]!.end <= from) this.t++;
    for (let i = this.t; i < this.tensors.length; i++) {
      const t = this.tensors[i]!;
      if (t.begin >= to) break;
      const s = Math.max(from, t.begin);
      const e = Math.min(to, t.end);
      if (e <= s) continue;
      const k = this.scanner.firstNonFinite(ptr + (s - from), e - s, t.dtype);
      if (k >= 0)
        return { op: 'non_finite', tensor: t.name, element: (s - t.begin) / dtypeSize(t.dtype) + k };
    }
    return null;
  }
}
