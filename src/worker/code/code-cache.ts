/**
 * The worker's cache of task code (docs/workers.md "Code shipped with tasks"): each blob is
 * downloaded once, its sha256 checked against the digest the task names, and kept under
 * its digest in a folder bounded by size; the least recently used blobs not in use are
 * evicted past the bound. Each task attempt gets the code unpacked into a fresh working
 * folder of its own; archives are checked entry by entry again before anything is written
 * (the server checked them at push, but a worker trusts nothing it downloads).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { extract } from 'tar';
import type { TaskCodeRef } from '../../api/code.js';
import { inspectArchive, type ArchiveLimits } from '../../code/archive-guard.js';
import { downloadModel, type TransferOptions } from '../executors/model-transfer.js';

/** Where and how much code a worker keeps. */
export interface CodeCacheOptions {
  /** The cache folder. */
  dir: string;
  /** Most bytes kept; least recently used blobs not in use go first. */
  maxBytes: number;
  /** What one archive may unpack to. Default 10,000 entries, 1 GiB. */
  limits?: ArchiveLimits;
  /** Where working folders are made. Default the system's temporary folder. */
  workRoot?: string;
}

/** A task's code unpacked for one attempt. */
export interface PreparedCode {
  /** The fresh working folder holding it. */
  dir: string;
  /** Removes the working folder. */
  cleanup(): Promise<void>;
}

/** Default unpack limits on the worker, whatever the server allowed. */
export const DEFAULT_WORKER_LIMITS: ArchiveLimits = { maxEntries: 10_000, maxUnpackedBytes: 1024 ** 3 };

const HEX = /^[0-9a-f]{64}$/;

/** Content-addressed, size-bounded LRU cache of code blobs. */
export class CodeCache {
  private readonly inUse = new Map<string, number>();
  private readonly fetching = new Map<string, Promise<string>>();

  constructor(private readonly opts: CodeCacheOptions) {}

  /** The blob of `digest` in the cache (downloaded and verified when missing), held until `release`. */
  async acquire(
    digest: string,
    transfer: TransferOptions,
  ): Promise<{ path: string; release(): Promise<void> }> {
    const hex = digest.startsWith('sha256:') ? digest.slice(7) : '';
    if (!HEX.test(hex))
      throw new Error(`config.code.digest ${JSON.stringify(digest)} is not sha256:<64 hex>`);
    this.inUse.set(hex, (this.inUse.get(hex) ?? 0) + 1);
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      const n = (this.inUse.get(hex) ?? 1) - 1;
      if (n > 0) this.inUse.set(hex, n);
      else this.inUse.delete(hex);
      await this.evict();
    };
    try {
      const path = await this.ensure(hex, transfer);
      return { path, release };
    } catch (err) {
      await release();
      throw err;
    }
  }

  /** Unpacks a task's code into a fresh working folder. */
  async prepare(ref: TaskCodeRef, taskTag: string, transfer: TransferOptions): Promise<PreparedCode> {
    const blob = await this.acquire(ref.digest, transfer);
    const root = this.opts.workRoot ?? tmpdir();
    await mkdir(root, { recursive: true });
    const dir = await mkdtemp(join(root, `ai-farm-${taskTag}-`));
    const cleanup = () => rm(dir, { recursive: true, force: true });
    try {
      if (ref.kind === 'file') {
        await copyFile(blob.path, join(dir, safeFileName(ref.file_name)));
      } else {
        const limits = this.opts.limits ?? DEFAULT_WORKER_LIMITS;
        await inspectArchive(blob.path, limits);
        await extract({ file: blob.path, cwd: dir, strict: true, preserveOwner: false, noMtime: true });
      }
      return { dir, cleanup };
    } catch (err) {
      await cleanup();
      throw err;
    } finally {
      await blob.release();
    }
  }

  private async ensure(hex: string, transfer: TransferOptions): Promise<string> {
    const path = join(this.opts.dir, hex);
    if (
      await stat(path)
        .then((s) => s.isFile())
        .catch(() => false)
    ) {
      // Its modification time is its last use: the LRU order survives a worker restart.
      const now = new Date();
      await utimes(path, now, now).catch(() => undefined);
      return path;
    }
    let pending = this.fetching.get(hex);
    if (!pending) {
      pending = this.download(hex, path, transfer).finally(() => this.fetching.delete(hex));
      this.fetching.set(hex, pending);
    }
    return pending;
  }

  private async download(hex: string, path: string, transfer: TransferOptions): Promise<string> {
    await mkdir(this.opts.dir, { recursive: true });
    const tmp = join(this.opts.dir, `.download-${randomBytes(6).toString('hex')}`);
    try {
      const r = await downloadModel(`/api/bundles/sha256:${hex}`, tmp, transfer);
      if (!r.ok) throw new Error(`cannot download code sha256:${hex}: ${r.status} ${r.code}: ${r.message}`);
      const got = await sha256File(tmp);
      if (got !== hex) {
        throw new Error(`digest mismatch: the task names sha256:${hex} but the server sent sha256:${got}`);
      }
      await rename(tmp, path);
      return path;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Drops least recently used blobs not in use until the cache fits maxBytes. */
  async evict(): Promise<string[]> {
    const names = await readdir(this.opts.dir).catch(() => [] as string[]);
    const blobs: { hex: string; size: number; used: number }[] = [];
    for (const hex of names.filter((n) => HEX.test(n))) {
      const s = await stat(join(this.opts.dir, hex)).catch(() => undefined);
      if (s) blobs.push({ hex, size: s.size, used: s.mtimeMs });
    }
    let total = blobs.reduce((a, b) => a + b.size, 0);
    const evicted: string[] = [];
    for (const b of blobs.sort((x, y) => x.used - y.used)) {
      if (total <= this.opts.maxBytes) break;
      if (this.inUse.has(b.hex) || this.fetching.has(b.hex)) continue;
      await rm(join(this.opts.dir, b.hex), { force: true });
      total -= b.size;
      evicted.push(`sha256:${b.hex}`);
    }
    return evicted;
  }
}

/** A single-file model's name as one safe path component. */
function safeFileName(name: string | undefined): string {
  const base = basename(name ?? 'model.py').replace(/[^A-Za-z0-9_.-]/g, '_');
  return base === '' || base === '.' || base === '..' ? 'model.py' : base;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
