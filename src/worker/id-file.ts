import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** Where `ai-farm worker` keeps its client id unless --id-file says otherwise. */
export const defaultIdFile = (): string => join(homedir(), '.ai-farm', 'worker-id');

/**
 * A worker's persisted client id, so it keeps its identity across restarts. The file is
 * locked (`<file>.lock` holding the pid) while a worker uses it: two workers sharing one
 * id would keep knocking each other off the server.
 */
export class IdFile {
  private locked = false;

  private constructor(readonly path: string) {}

  /** Opens and locks the file; throws when another live worker holds it. */
  static open(path: string): IdFile {
    const f = new IdFile(path);
    f.lock();
    return f;
  }

  /** The id stored, if any. */
  read(): string | undefined {
    try {
      const id = readFileSync(this.path, 'utf8').trim();
      return id || undefined;
    } catch {
      return undefined;
    }
  }

  /** Stores `id` (written to a temp file and renamed, so a crash never leaves half an id). */
  save(id: string): void {
    if (this.read() === id) return;
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${id}\n`, { mode: 0o600 });
    renameSync(tmp, this.path);
  }

  release(): void {
    if (!this.locked) return;
    this.locked = false;
    rmSync(`${this.path}.lock`, { force: true });
  }

  private lock(): void {
    const lock = `${this.path}.lock`;
    mkdirSync(dirname(this.path), { recursive: true });
    for (let tries = 0; tries < 2; tries++) {
      try {
        writeFileSync(lock, String(process.pid), { flag: 'wx' });
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = Number(readFileSync(lock, 'utf8').trim());
      if (holder && holder !== process.pid && isAlive(holder)) {
        throw new Error(`another worker (pid ${holder}) uses ${this.path}; give this one its own --id-file`);
      }
      // Left by a worker that died without cleaning up.
      rmSync(lock, { force: true });
    }
    throw new Error(`cannot lock ${lock}`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
