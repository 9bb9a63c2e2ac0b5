/**
 * A resumable update upload by tus-py-client (Debian's python3-tuspy), a tus client AI Farm
 * did not write: it sends part of the update with per-request checksums and stops, as a worker
 * cut off would; a second process resumes it from the offset the server gives and finishes it.
 * The server's digest of the update is checked against the file's digest computed by Python's
 * hashlib in the client (docs/protocol.md), and the round closes with it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors } from '../src/training/safetensors/encode.js';
import { DIALECTS } from './helpers/db.js';
import { fileDigest } from './helpers/digest.js';
import { waitFor } from './helpers/wait.js';
import { taskMessage, trainingFarm, type TrainingFarm } from './helpers/training.js';

const PYTHON = '/usr/bin/python3';
const SCRIPT = join(import.meta.dirname, 'clients', 'tus_upload.py');
const run = promisify(execFile);

interface Uploaded {
  url: string;
  offset: number;
  headers: Record<string, string>;
  digest: string;
}

async function tusPy(args: string[]): Promise<Uploaded> {
  const { stdout } = await run(PYTHON, [SCRIPT, ...args], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Uploaded;
}

describe.each(DIALECTS)('tus-py-client uploads an update (%s)', (dialect) => {
  let farm: TrainingFarm;
  let dir: string;

  beforeAll(async () => {
    farm = await trainingFarm(dialect, 1);
    dir = await mkdtemp(join(tmpdir(), 'aifarm-tuspy-'));
  });
  afterAll(async () => {
    await farm?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('resumes a stopped upload in a new process, and the digests agree', async () => {
    const made = await farm.ts.api('POST', '/api/tasks', {
      type: 'command',
      requirements: {},
      world_size: 1,
      config: { rounds: 1 },
    });
    expect(made.status).toBe(201);
    const taskId = made.body.id as number;
    const lease = await taskMessage(farm.clients[0]!, taskId);
    // 9 M float32 values: 36 MB, nine digest pieces, past the check thread's 32 MiB threshold.
    const values = new Float32Array(9_000_000).map((_, i) => ((i * 13) % 997) / 997);
    const bytes = encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [values.length], data: values }]);
    const file = join(dir, 'update.safetensors');
    await writeFile(file, bytes);
    const endpoint = `${farm.ts.server.httpUrl}/api/tasks/${taskId}/rounds/1/updates/${lease.rank}?attempt=${lease.attempt}&num_samples=25`;
    const common = [endpoint, farm.token, farm.ids[0]!, file];

    const first = await tusPy([...common, '--stop-at', String(10 * 1024 * 1024)]);
    expect(first.offset).toBeGreaterThanOrEqual(10 * 1024 * 1024);
    expect(first.offset).toBeLessThan(bytes.length);
    expect(first.url).toMatch(new RegExp(`/api/tasks/${taskId}/rounds/1/updates/0/uploads/`));

    const second = await tusPy([...common, '--url', first.url]);
    expect(second.offset).toBe(bytes.length);
    expect(second.digest).toBe(fileDigest(bytes));
    expect(second.headers['x-ai-farm-digest']).toBe(second.digest);
    expect(Number(second.headers['x-ai-farm-bytes'])).toBe(bytes.length);

    // The one-rank round closes on it: the task completes.
    await waitFor(
      'the task completed',
      async () => (await farm.ts.api('GET', `/api/tasks/${taskId}`)).body.status === 'completed',
      30_000,
    );
  });
});
