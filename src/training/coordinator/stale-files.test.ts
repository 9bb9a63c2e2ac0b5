import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeStale, STALE_UPLOAD_MS } from './stale-files.js';

describe('removeStale', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('removes only the files untouched for longer than the age, and ignores a missing folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aifarm-stale-'));
    dirs.push(dir);
    const now = Date.now();
    await writeFile(join(dir, 'crashed.part'), 'x');
    await writeFile(join(dir, 'in-flight.part'), 'y');
    const old = new Date(now - STALE_UPLOAD_MS - 60_000);
    await utimes(join(dir, 'crashed.part'), old, old);
    expect(await removeStale(dir, STALE_UPLOAD_MS, now)).toEqual(['crashed.part']);
    expect(await readdir(dir)).toEqual(['in-flight.part']);
    expect(await removeStale(join(dir, 'missing'), STALE_UPLOAD_MS, now)).toEqual([]);
  });
});
