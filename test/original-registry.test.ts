import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';
import { adminPanelBody, frames, LINEAR_MODEL, runOriginalClient } from './helpers/original-client.js';

// Issue 13's "done when": a task created with the original admin panel's body, its `url` at
// our model server, completes on a client speaking the original's frames. The code comes
// from the model registry (PUT /api/models/{name}/{version}; GET /models/{name}/{version} on
// MODEL_SERVER_PORT answering {"name", "version", "code"}), served without a token in the
// original's trust model (ALLOW_ANONYMOUS_CLIENTS=true), as its client sends none.
describe.each(DIALECTS)('the original client with code from our model registry on %s', (dialect) => {
  let ts: TestServer;

  beforeAll(async () => {
    ts = await startTestServer(dialect, { ALLOW_ANONYMOUS_CLIENTS: true });
  });
  afterAll(async () => {
    await ts?.stop();
  });

  it('pushes the code, creates the task with its url at our model server, and the client completes it', async () => {
    const pushed = await fetch(`${ts.url}/api/models/sonnet/1.0`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ts.adminToken}`, 'content-type': 'text/x-python' },
      body: LINEAR_MODEL,
    });
    expect(pushed.status, await pushed.clone().text()).toBe(201);

    const modelPort = new URL(ts.server.modelUrl).port;
    const url = `http://127.0.0.1:${modelPort}/models/sonnet/1.0`;
    const created = await ts.api('POST', '/api/tasks', adminPanelBody(url, { epochs: 2 }));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.config).toMatchObject({ url, model: 'sonnet@1.0' });
    const id = created.body.id as number;

    const run = await runOriginalClient(['--url', ts.server.wsUrl, '--id', `orig-registry-${dialect}`]);
    expect(run.code, JSON.stringify(run.events) + run.stderr).toBe(0);
    expect(frames(run, 'error')).toEqual([]);
    const trained = run.events.find((e) => e.event === 'trained') as unknown as { losses: number[] };
    expect(trained.losses.at(-1)).toBeLessThan(trained.losses[0] as number);
    const task = await waitFor('the task to complete', async () => {
      const t = (await ts.api('GET', `/api/tasks/${id}`)).body;
      return t.status === 'completed' && t;
    });
    expect(task.client_id).toBe(`orig-registry-${dialect}`);
  });
});
