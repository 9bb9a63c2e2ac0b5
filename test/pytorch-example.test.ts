import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { CliProcess, runCli } from './clients/processes.js';
import { waitFor } from './helpers/wait.js';

// examples/pytorch/train.py trained through a real server by real `ai-farm worker` processes:
// two ranks, two FedAvg rounds, the `command` executor's round loop. The task is created with
// `ai-farm tasks create --code examples/pytorch`, and the workers run in an empty folder of
// their own: they get the script only from the bundle. Needs Debian's python3-torch
// (scripts/ensure-services.sh installs it); nothing is installed here.

const PYTHON = '/usr/bin/python3';
const EXAMPLE = join(import.meta.dirname, '..', 'examples', 'pytorch');

let ts: TestServer;
let dir: string;
const procs: CliProcess[] = [];

beforeAll(async () => {
  try {
    execFileSync(PYTHON, ['-c', 'import torch'], { stdio: 'pipe' });
  } catch {
    throw new Error(
      `${PYTHON} cannot import torch: install Debian's python3-torch (scripts/ensure-services.sh)`,
    );
  }
  ts = await startTestServer('sqlite');
  dir = mkdtempSync(join(tmpdir(), 'aifarm-pytorch-'));
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the PyTorch example', () => {
  it('trains with two ranks for two rounds through the server, and the loss falls', async () => {
    const tok = await ts.api('POST', '/api/tokens', { name: 'pytorch-workers', role: 'worker' });
    expect(tok.status).toBe(201);
    for (const name of ['torch-a', 'torch-b']) {
      // No checkout here: the script reaches the worker only as the task's code.
      const home = join(dir, name);
      mkdirSync(home);
      const w = new CliProcess(
        [
          'worker',
          '--server',
          ts.url,
          '--id-file',
          join(home, 'id'),
          '--code-cache',
          join(home, 'code-cache'),
          '--name',
          name,
          '--max-tasks',
          '1',
        ],
        { AI_FARM_TOKEN: tok.body.token },
        { cwd: home },
      );
      procs.push(w);
      await w.waitFor(/registered as/);
    }
    const created = await runCli(
      [
        'tasks',
        'create',
        '--code',
        EXAMPLE,
        '--type',
        'command',
        '--name',
        'pytorch example',
        '--json',
        '--config',
        JSON.stringify({
          command: [PYTHON, 'train.py'],
          n_clients: 2,
          rounds: 2,
          epochs: 1,
          batch_size: 32,
          seed: 3,
          lr: 0.05,
        }),
      ],
      { AI_FARM_SERVER: ts.url, AI_FARM_TOKEN: ts.adminToken },
    );
    expect(created.code, created.stderr).toBe(0);
    const task = JSON.parse(created.stdout);
    expect(task.world_size).toBe(2);
    expect(task.config.code).toMatchObject({ kind: 'folder', digest: expect.stringMatching(/^sha256:/) });
    const id: number = task.id;

    const done = await waitFor(
      'the task to finish',
      async () => {
        const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
        return ['completed', 'failed', 'error', 'cancelled'].includes(t.status) && t;
      },
      150_000,
    );
    expect(done.status, `${done.error_log}\n${procs.map((p) => p.output).join('\n')}`).toBe('completed');

    const rounds = (await ts.api('GET', `/api/tasks/${id}/rounds`)).body.items as {
      round: number;
      state: string;
      num_updates: number;
      metrics: { loss?: number } | null;
    }[];
    expect(rounds.map((r) => [r.round, r.state, r.num_updates])).toEqual([
      [1, 'closed', 2],
      [2, 'closed', 2],
    ]);
    const first = rounds[0]!.metrics?.loss;
    const last = rounds[1]!.metrics?.loss;
    expect(typeof first).toBe('number');
    expect(first!, `mean loss of round 1 ${first}, of round 2 ${last}`).toBeGreaterThan(last!);

    // The final model is the averaged PyTorch state dict, as safetensors.
    const model = await fetch(`${ts.url}/api/tasks/${id}/model`, {
      headers: { authorization: `Bearer ${ts.adminToken}` },
    });
    expect(model.status).toBe(200);
    const bytes = Buffer.from(await model.arrayBuffer());
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'));
    expect(
      Object.keys(header)
        .filter((k) => k !== '__metadata__')
        .sort(),
    ).toEqual(['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']);
  }, 200_000);
});
