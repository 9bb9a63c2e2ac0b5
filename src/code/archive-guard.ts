/**
 * The security boundary of shipped code: every entry of a code archive (tar.gz) is checked
 * before anything is written from it, at push on the server and again on the worker before
 * unpacking. Refused: absolute paths, `..`, symbolic links leading out of the folder (or
 * through another link), hard links to anything but a regular file earlier in the archive,
 * device files, FIFOs and other special entries, and archives past the entry-count or
 * unpacked-size limits. The decompressed stream itself is bounded too, so a gzip bomb stops
 * after the limit rather than filling memory or time.
 */
import { createReadStream } from 'node:fs';
import { posix } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { AppError } from '../errors.js';

/** How much an archive may hold. */
export interface ArchiveLimits {
  /** Most entries (files, folders, links). */
  maxEntries: number;
  /** Largest total size of the files it unpacks to, bytes. */
  maxUnpackedBytes: number;
}

/** What a checked archive holds. */
export interface ArchiveSummary {
  entries: number;
  unpackedBytes: number;
}

/** A refused archive: 400 `unsafe_archive`, naming the entry and why. */
export function unsafeArchive(entry: string, reason: string): AppError {
  return new AppError('unsafe_archive', `archive entry ${JSON.stringify(entry)}: ${reason}`, 400, {
    entry,
    reason,
  });
}

const REGULAR = new Set(['File', 'OldFile', 'ContiguousFile']);

/** The running state of one archive's check: what earlier entries were. */
export class EntryChecker {
  private entries = 0;
  private bytes = 0;
  private readonly files = new Set<string>();
  private readonly links = new Set<string>();

  constructor(private readonly limits: ArchiveLimits) {}

  /** Checks one entry's header; throws `unsafe_archive` naming it. Pure: no I/O. */
  check(e: { path: string; type: string; size: number; linkpath?: string | undefined }): void {
    const raw = e.path;
    if (raw.includes('\0') || raw.includes('\\')) throw unsafeArchive(raw, 'NUL or backslash in the path');
    if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw unsafeArchive(raw, 'absolute path');
    const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw unsafeArchive(raw, "'..' in the path");
    const path = parts.join('/');
    this.entries += 1;
    if (this.entries > this.limits.maxEntries) {
      throw unsafeArchive(raw, `more than ${this.limits.maxEntries} entries`);
    }
    if (path === '') {
      if (e.type === 'Directory') return;
      throw unsafeArchive(raw, 'empty path');
    }
    for (let i = 1; i < parts.length; i++) {
      if (this.links.has(parts.slice(0, i).join('/'))) {
        throw unsafeArchive(raw, 'path passes through a symbolic link');
      }
    }
    if (e.type === 'Directory') return;
    if (e.type === 'SymbolicLink') {
      const target = e.linkpath ?? '';
      if (target === '' || target.startsWith('/') || target.includes('\0')) {
        throw unsafeArchive(raw, `symbolic link to ${JSON.stringify(target)} leads out of the folder`);
      }
      const resolved = posix.normalize(posix.join(posix.dirname(path), target));
      if (resolved === '..' || resolved.startsWith('../')) {
        throw unsafeArchive(raw, `symbolic link to ${JSON.stringify(target)} leads out of the folder`);
      }
      this.links.add(path);
      return;
    }
    if (e.type === 'Link') {
      const target = posix.normalize(e.linkpath ?? '');
      if (!this.files.has(target)) {
        throw unsafeArchive(
          raw,
          `hard link to ${JSON.stringify(e.linkpath ?? '')}, which is not a file earlier in the archive`,
        );
      }
      return;
    }
    if (!REGULAR.has(e.type)) throw unsafeArchive(raw, `${e.type} entries are not allowed`);
    this.bytes += e.size;
    if (this.bytes > this.limits.maxUnpackedBytes) {
      throw unsafeArchive(raw, `unpacks past the limit of ${this.limits.maxUnpackedBytes} bytes`);
    }
    this.files.add(path);
  }

  summary(): ArchiveSummary {
    return { entries: this.entries, unpackedBytes: this.bytes };
  }
}

/** Passes bytes through, failing once more than `max` have passed. */
class ByteCap extends Transform {
  private seen = 0;
  constructor(private readonly max: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) cb(unsafeArchive('(archive)', `decompresses past ${this.max} bytes`));
    else cb(null, chunk);
  }
}

/**
 * Checks every entry of the tar.gz at `file` without writing anything; resolves with what it
 * holds, rejects with `unsafe_archive` (the first bad entry) or `invalid_archive`.
 */
export async function inspectArchive(file: string, limits: ArchiveLimits): Promise<ArchiveSummary> {
  const checker = new EntryChecker(limits);
  let refused: AppError | undefined;
  const parser = new Parser({ strict: true });
  parser.on('entry', (entry: ReadEntry) => {
    try {
      if (!refused) checker.check(entry);
    } catch (err) {
      refused = err as AppError;
      parser.abort(refused);
    }
    entry.resume();
  });
  // Headers and padding: three 512-byte blocks per entry at most (long names, pax), plus slack.
  const cap = limits.maxUnpackedBytes + (limits.maxEntries + 2) * 1536 + 1024 * 1024;
  const source = createReadStream(file);
  const gunzip = createGunzip();
  const capped = new ByteCap(cap);
  try {
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        source.destroy();
        gunzip.destroy();
        capped.destroy();
        reject(err);
      };
      source.on('error', fail);
      gunzip.on('error', fail);
      capped.on('error', fail);
      parser.on('error', fail);
      parser.on('abort', fail);
      parser.on('end', () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      });
      source
        .pipe(gunzip)
        .pipe(capped)
        .pipe(parser as unknown as NodeJS.WritableStream);
    });
  } catch (err) {
    if (refused) throw refused;
    if (err instanceof AppError) throw err;
    throw new AppError('invalid_archive', `not a readable tar.gz archive (${(err as Error).message})`, 400);
  }
  if (refused) throw refused;
  const summary = checker.summary();
  if (summary.entries === 0) throw new AppError('invalid_archive', 'the archive has no entries', 400);
  return summary;
}
