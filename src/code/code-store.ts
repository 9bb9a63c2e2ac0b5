/**
 * Code blobs on disk: MODEL_CACHE_DIR/code/<sha256 hex>, written whole or not at all. An
 * upload is streamed to a temporary file while hashed, bounded by MAX_CODE_BYTES, and an
 * archive is checked entry by entry (archive-guard.ts) before it is kept.
 */
import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError, badRequest } from '../errors.js';
import type { CodeKind } from '../storage/schema.js';
import { AtomicFile } from '../training/model-store/atomic-file.js';
import { inspectArchive, type ArchiveLimits } from './archive-guard.js';

/** An upload checked and sealed, not yet kept: commit or discard it. */
export interface ReceivedCode {
  digest: string;
  size: number;
  entries: number;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

export interface CodeStoreOptions extends ArchiveLimits {
  /** MODEL_CACHE_DIR. */
  dir: string;
  /** MAX_CODE_BYTES. */
  maxBytes: number;
}

/** Content-addressed code blobs under MODEL_CACHE_DIR/code. */
export class CodeStore {
  private readonly root: string;

  constructor(private readonly opts: CodeStoreOptions) {
    this.root = resolve(opts.dir, 'code');
  }

  /** Where the blob of `digest` ('sha256:<hex>') lives. */
  pathOf(digest: string): string {
    return join(this.root, digest.slice('sha256:'.length));
  }

  async exists(digest: string): Promise<boolean> {
    return (await stat(this.pathOf(digest)).catch(() => null))?.isFile() === true;
  }

  /** Streams `body` to a temporary file, hashing it; an archive is checked before this resolves. */
  async receive(body: Readable, kind: CodeKind, contentLength: number | undefined): Promise<ReceivedCode> {
    const max = this.opts.maxBytes;
    if (contentLength !== undefined && contentLength > max) throw tooLarge(max);
    const file = await AtomicFile.create(join(this.root, 'tmp'), 'sha256');
    try {
      for await (const chunk of body) {
        await file.write(chunk as Buffer);
        if (file.bytes > max) throw tooLarge(max);
      }
      if (file.bytes === 0) throw badRequest('empty_code', 'the body is empty: send the file or the tar.gz');
      const hex = await file.seal();
      const entries = kind === 'folder' ? (await inspectArchive(file.tmpPath, this.opts)).entries : 1;
      const digest = `sha256:${hex}`;
      const size = file.bytes;
      return {
        digest,
        size,
        entries,
        commit: async () => {
          // The same bytes are there already: keep those, drop these.
          if (await this.exists(digest)) await file.abort();
          else await file.commit(this.pathOf(digest));
        },
        discard: () => file.abort(),
      };
    } catch (err) {
      await file.abort();
      throw err;
    }
  }

  /** Removes a blob's file (when nothing refers to it any more). */
  async remove(digest: string): Promise<void> {
    await rm(this.pathOf(digest), { force: true });
  }
}

const tooLarge = (max: number) =>
  new AppError('code_too_large', `code larger than MAX_CODE_BYTES (${max} bytes) is refused`, 413);
