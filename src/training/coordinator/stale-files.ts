/**
 * Leftovers of uploads cut by a crash. Alone, a server removes its `incoming/` folder when it
 * loads a run (nothing can be in flight then). Several instances share that folder, and
 * another instance may be receiving an upload right now, so only files nobody has written to
 * for a while are removed.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * How old an upload's temporary file must be to be a leftover: uploads end within the API's
 * 120 s request timeout, so one untouched for 10 minutes is no longer being written.
 */
export const STALE_UPLOAD_MS = 10 * 60_000;

/** Removes the entries of `dir` not modified for `ageMs` before `now` (no folder: nothing). */
export async function removeStale(dir: string, ageMs: number, now: number): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    const st = await stat(path).catch(() => null);
    if (st && now - st.mtimeMs > ageMs) {
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}
