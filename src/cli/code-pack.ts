/**
 * Packs a folder into the tar.gz a task's code ships as: the files under it, in a stable
 * order and without modification times, so the same folder gives the same digest (pushing it
 * again is free). Skipped: `.git/`, what the folder's top-level `.gitignore` names, and the
 * `--exclude` patterns (gitignore syntax, relative to the folder).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import ignore from 'ignore';
import { create } from 'tar';

/** A folder packed, or a file read, ready to push. */
export interface PackedCode {
  bytes: Buffer;
  kind: 'file' | 'folder';
  /** A single file's name. */
  fileName?: string;
  /** Files (and links) packed. */
  entries: number;
}

const ARCHIVE = /\.(tar\.gz|tgz)$/i;

/** The files under `dir` not ignored, as sorted POSIX paths relative to it. */
export async function listPackedFiles(dir: string, exclude: readonly string[] = []): Promise<string[]> {
  const ig = ignore().add('.git/');
  const gitignore = await readFile(join(dir, '.gitignore'), 'utf8').catch(() => '');
  ig.add(gitignore).add([...exclude]);
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(join(dir, rel), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (!ig.ignores(`${path}/`)) await walk(path);
      } else if (!ig.ignores(path)) out.push(path);
    }
  };
  await walk('');
  return out;
}

/**
 * What `--code PATH` or `models push ... PATH` sends: a folder packed, a .tar.gz/.tgz as it is
 * (a folder already packed), or any other file as a single-file model.
 */
export async function packCode(path: string, exclude: readonly string[] = []): Promise<PackedCode> {
  const s = await stat(path);
  if (s.isFile()) {
    const bytes = await readFile(path);
    if (ARCHIVE.test(path)) return { bytes, kind: 'folder', entries: 0 };
    return { bytes, kind: 'file', fileName: basename(path), entries: 1 };
  }
  if (!s.isDirectory()) throw new Error(`${path} is neither a file nor a folder`);
  const files = await listPackedFiles(path, exclude);
  if (files.length === 0) throw new Error(`${path} has no files to pack (all ignored?)`);
  const chunks: Buffer[] = [];
  const stream = create({ gzip: true, cwd: path, portable: true, noMtime: true, noDirRecurse: true }, files);
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return { bytes: Buffer.concat(chunks), kind: 'folder', entries: files.length };
}
