import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';
import { sleep } from './helpers/wait.js';

/**
 * A flood of task_request within the message limit does not make the server scan its whole
 * queue once per request (issue 11, point 5): with 2,500 pending tasks no worker can run,
 * requests while nothing changes cost no full pass. docs/benchmarks.md has the latency figure
 * (bench/flood.ts); this checks the mechanism, which does not depend on the machine's speed.
 */

const TASKS = 2500;
const SOCKETS = 4;
/** Per socket, well under MAX_MESSAGES_PER_SECOND (500 by default), as an honest worker. */
const RATE = 150;
const SECONDS = 2;

async function passes(t: TestServer): Promise<{ placed: number; idle: number; skipped: number }> {
  const res = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } });
  const text = await res.text();
  const count = (outcome: string) =>
    Number(
      new RegExp(`^aifarm_dispatch_passes_total\\{outcome="${outcome}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0,
    );
  return { placed: count('placed'), idle: count('idle'), skipped: count('skipped') };
}

describe.each(DIALECTS)('a task_request flood on %s', (dialect) => {
  let t: TestServer;
  const sockets: RawClient[] = [];

  beforeAll(async () => {
    t = await startTestServer(dialect);
    const token = (await t.api('POST', '/api/tokens', { name: 'flood', role: 'worker' })).body.token;
    for (let made = 0; made < TASKS; made += 1000) {
      const tasks = Array.from({ length: Math.min(1000, TASKS - made) }, () => ({
        type: 'flood',
        requirements: { min_ram_gb: 1e6 },
      }));
      expect((await t.api('POST', '/api/tasks/batch', { tasks })).status).toBe(201);
    }
    for (let i = 0; i < SOCKETS; i++) {
      sockets.push(await registeredClient(t.server.wsUrl, token, `flood-${dialect}-${i}`));
    }
  });
  afterAll(async () => {
    for (const s of sockets) s.close();
    await t?.stop();
  });

  it('answers every request and runs no full dispatch pass while nothing changes', async () => {
    // Settle: the registrations' passes (and unschedulable notes) are done before counting.
    for (const s of sockets) {
      s.send({ type: 'task_request', msg_id: 'settle' });
      await s.next((m) => m.type === 'no_task' && m.reply_to === 'settle', 15_000);
    }
    const before = await passes(t);
    // Paced by the clock: RATE per second per socket whatever the machine's speed.
    const started = Date.now();
    let sent = 0;
    while (Date.now() - started < SECONDS * 1000) {
      const due = Math.floor(((Date.now() - started) / 1000) * RATE);
      for (; sent < due; sent++) for (const s of sockets) s.send({ type: 'task_request' });
      await sleep(10);
    }
    for (const s of sockets) s.send({ type: 'task_request', msg_id: 'last' });
    for (const s of sockets) await s.next((m) => m.type === 'no_task' && m.reply_to === 'last', 60_000);
    for (const s of sockets) {
      expect(s.closeCode).toBeNull();
      expect(s.received.filter((m) => m.type === 'no_task')).toHaveLength(sent);
    }
    const after = await passes(t);
    const requests = (sent + 1) * SOCKETS;
    // Nothing changed during the flood: no pass looked at the 2,500 tasks again. (Before,
    // every request ran one: `idle` grew by `requests`.)
    expect(after.idle - before.idle).toBe(0);
    expect(after.placed - before.placed).toBe(0);
    // Requests that arrived while a pass was waiting shared it, so there are at most as
    // many passes as requests (how many fewer depends on the machine's speed).
    expect(after.skipped - before.skipped).toBeGreaterThan(0);
    expect(after.skipped - before.skipped).toBeLessThanOrEqual(requests);
  });

  it('still places a task that becomes runnable during the flood', async () => {
    const s = sockets[0] as RawClient;
    const flood = setInterval(() => {
      for (const c of sockets) c.send({ type: 'task_request' });
    }, 10);
    try {
      const r = await t.api('POST', '/api/tasks', { type: 'flood', requirements: {} });
      expect(r.status).toBe(201);
      const m = await Promise.race(
        sockets.map((c) =>
          c.next((x) => x.type === 'task' && (x.data as { id: number }).id === r.body.id, 15_000),
        ),
      );
      expect((m.data as { attempt: number }).attempt).toBe(1);
    } finally {
      clearInterval(flood);
    }
    expect(s.closeCode).toBeNull();
  });
});
