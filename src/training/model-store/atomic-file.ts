/**
 * Files that appear whole or not at all: written to a temporary name in the target's folder
 * while hashing, fsynced, then renamed over the target (and the folder fsynced), so a crash
 * at any moment leaves either the old file or the complete new one — never a torn one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PieceDigest } from '../safetensors/digest.js';

/** What a file's digest is: the model digest (digest.ts, piece-wise), or a plain sha256. */
export type FileDigestKind = 'model' | 'sha256';

interface Hasher {
  update(bytes: Uint8Array): unknown;
  digest(): string;
}

function hasher(kind: FileDigestKind): Hasher {
  if (kind === 'model') return new PieceDigest();
  const h = createHash('sha256');
  return { update: (b) => h.update(b), digest: () => h.digest('hex') };
}

/** A file being written; nothing is visible at `path` until {@link AtomicFile.commit}. */
export class AtomicFile {
  bytes = 0;
  private readonly hash: Hasher;
  private state: 'open' | 'closed' | 'done' | 'aborted' = 'open';

  private constructor(
    readonly tmpPath: string,
    private readonly fh: FileHandle,
    digestKind: FileDigestKind = 'model',
  ) {
    this.hash = hasher(digestKind);
  }

  /**
   * Opens a temporary file in `dir` (created when missing). Its digest is the model digest,
   * or with `digestKind` 'sha256' the plain sha256 of its bytes (code bundles: anyone can
   * check them with sha256sum).
   */
  static async create(dir: string, digestKind: FileDigestKind = 'model'): Promise<AtomicFile> {
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.upload-${randomBytes(8).toString('hex')}.tmp`);
    return new AtomicFile(tmp, await open(tmp, 'wx'), digestKind);
  }

  /**
   * Opens an existing temporary file to write more of it (a resumable upload's part, whose
   * bytes are hashed by the caller's writer). {@link release} closes it and keeps it.
   */
  static async reopen(path: string): Promise<AtomicFile> {
    return new AtomicFile(path, await open(path, 'r+'));
  }

  /** Reads `length` bytes at `position` (a resumed upload reads back its unfinished piece). */
  async readAt(position: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    for (let done = 0; done < length;) {
      const { bytesRead } = await this.fh.read(out, done, length - done, position + done);
      if (bytesRead === 0) throw new Error(`${this.tmpPath} ends before byte ${position + length}`);
      done += bytesRead;
    }
    return out;
  }

  /** Closes the file and keeps it (a resumable upload's part, continued later). */
  async release(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'done';
    await this.fh.close();
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error('file is not open');
    this.hash.update(chunk);
    this.bytes += chunk.length;
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done);
      done += bytesWritten;
    }
  }

  /**
   * Writes `chunk` at `position` without hashing it, for a writer that hashes elsewhere and
   * hands its digest to {@link seal}. Writes at distinct positions may run concurrently; every
   * one must have settled before seal or abort. (A writer on another thread opens the file at
   * {@link tmpPath} itself: see upload-check.ts.)
   */
  async writeAt(chunk: Uint8Array, position: number): Promise<void> {
    if (this.state !== 'open') throw new Error('file is not open');
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, position + done);
      done += bytesWritten;
    }
    this.bytes = Math.max(this.bytes, position + chunk.length);
  }

  /** Sets the file's length to `bytes` (cuts a padded last direct write; records another writer's). */
  async truncate(bytes: number): Promise<void> {
    if (this.state !== 'open') throw new Error('file is not open');
    await this.fh.truncate(bytes);
    this.bytes = bytes;
  }

  /** Starts writing back what was written so far (fdatasync), so that seal has less left to do. */
  async datasync(): Promise<void> {
    if (this.state !== 'open') throw new Error('file is not open');
    await this.fh.datasync();
  }

  /**
   * fsyncs and closes the temporary file; returns its digest (digest.ts), or `digest` when the bytes
   * were hashed elsewhere (see writeAt). It can still be read at tmpPath.
   */
  async seal(digest?: string): Promise<string> {
    if (this.state !== 'open') throw new Error('file is not open');
    await this.fh.sync();
    await this.fh.close();
    this.state = 'closed';
    const own = this.hash.digest();
    return digest ?? own;
  }

  /** Renames the sealed file to `path` and makes the rename durable. */
  async commit(path: string): Promise<void> {
    if (this.state !== 'closed') throw new Error('seal the file before committing it');
    await mkdir(dirname(path), { recursive: true });
    await rename(this.tmpPath, path);
    this.state = 'done';
    await syncDirectory(dirname(path));
  }

  /** Discards the temporary file. Safe to call at any point, more than once. */
  async abort(): Promise<void> {
    if (this.state === 'done' || this.state === 'aborted') return;
    if (this.state === 'open') await this.fh.close().catch(() => undefined);
    this.state = 'aborted';
    await unlink(this.tmpPath).catch(() => undefined);
  }
}

/** Copies `src` to `dst` atomically (checkpoints); returns the copy's digest. */
export async function copyFileAtomic(src: string, dst: string): Promise<string> {
  const f = await AtomicFile.create(dirname(dst));
  try {
    for await (const chunk of createReadStream(src, { highWaterMark: 4 << 20 })) {
      await f.write(chunk as Buffer);
    }
    const digest = await f.seal();
    await f.commit(dst);
    return digest;
  } catch (err) {
    await f.abort();
    throw err;
  }
}

/** Makes a rename durable; best effort (some filesystems refuse fsync on folders). */
export async function syncDirectory(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // The data itself is fsynced; the folder entry is a bonus.
  }
}

/** `name` made safe as one path component. */
export function fileName(name: string): string {
  return basename(name).replace(/[^A-Za-z0-9_.-]/g, '_');
}
