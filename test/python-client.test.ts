import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPythonClient } from './helpers/original-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';

// Workers in any language: a Python client speaking only the seed's protocol drives the
// real server.
const runSeedClient = (args: string[]) => runPythonClient('seed_client.py', args, 40_000);

let ts: TestServer;
let token: string;

beforeAll(async () => {
  // The seed's token-less mode is on here so that both ways in are tested.
  ts = await startTestServer('sqlite', { ALLOW_ANONYMOUS_CLIENTS: true });
  token = (await ts.api('POST', '/api/tokens', { name: 'python', role: 'worker' })).body.token;
});
afterAll(async () => {
  await ts?.stop();
});

async function completesATask(clientId: string, auth: string[]): Promise<void> {
  const created = await ts.api('POST', '/api/tasks', {
    type: 'command',
    name: `python-${clientId}`,
    requirements: { min_cpu_cores: 1 },
    config: { epochs: 2, batches: 3 },
  });
  expect(created.status).toBe(201);
  const id = created.body.id as number;

  const run = await runSeedClient(['--url', ts.server.wsUrl, '--id', clientId, ...auth]);
  expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
  const kinds = run.events.map((e) => e.event);
  expect(kinds).toEqual(['requested', 'registered', 'task', 'done']);
  expect(run.events[1]).toMatchObject({ client_id: clientId });
  expect(run.events[2]).toMatchObject({ task_id: String(id), config: { epochs: 2, batches: 3 } });

  const task = await waitFor('the task to complete', async () => {
    const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
    return t.status === 'completed' && t;
  });
  expect(task).toMatchObject({ client_id: clientId, progress: 100 });
  expect(task.metrics).toMatchObject({ final_loss: expect.any(Number) });
  const history = (await ts.api('GET', `/api/tasks/${id}/metrics`)).body;
  expect(history.items.length).toBeGreaterThan(0);
  expect(history.items[0].metrics).toMatchObject({ total_epochs: 2, total_batches: 3 });

  // Its system-info object was stored as the seed's columns.
  const client = (await ts.api('GET', `/api/clients/${clientId}`)).body;
  expect(client.cpu_info).toMatchObject({ cores_logical: expect.any(Number) });
  expect(client.ram_info).toMatchObject({ total: expect.any(Number) });
  expect(client.gpu_info).toBeNull();
}

describe('a Python client speaking only the seed protocol', () => {
  it('registers with a token, takes a task, reports progress and completes it', async () => {
    await completesATask('seed-py-token', ['--token', token]);
  });

  it('works without a token when ALLOW_ANONYMOUS_CLIENTS is on (the seed mode)', async () => {
    await completesATask('seed-py-anonymous', []);
  });
});
