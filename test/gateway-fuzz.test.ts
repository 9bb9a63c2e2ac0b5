import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { registeredClient, type RawClient } from './helpers/ws-client.js';

const TYPES = [
  'register',
  'task_request',
  'task_progress',
  'task_result',
  'heartbeat',
  'task',
  'pause',
  '',
  'x',
];

/** Messages that look almost right: known types with random fields of random types. */
const nearMessage = fc
  .record(
    {
      type: fc.constantFrom(...TYPES),
      msg_id: fc.oneof(fc.string({ maxLength: 10 }), fc.integer()),
      task_id: fc.oneof(fc.integer(), fc.string({ maxLength: 12 }), fc.constant(null)),
      progress: fc.oneof(fc.double(), fc.string({ maxLength: 5 }), fc.constant(null)),
      status: fc.constantFrom('completed', 'failed', 'error', 'done', 5),
      metrics: fc.oneof(fc.object(), fc.array(fc.integer()), fc.constant(null)),
      attempt: fc.oneof(fc.integer(), fc.double()),
      client_id: fc.oneof(fc.string({ maxLength: 20 }), fc.constant('fuzz')),
      utilization: fc.oneof(fc.object(), fc.record({ cpu_utilization: fc.double() })),
      cpu: fc.oneof(fc.object(), fc.record({ cores_logical: fc.integer() })),
      ram: fc.oneof(fc.object(), fc.record({ total: fc.double() })),
    },
    { requiredKeys: [] },
  )
  .map((m) => JSON.stringify(m));

const frame = fc.oneof(nearMessage, fc.string({ maxLength: 200 }), fc.json({ maxDepth: 3 }));

describe('gateway under random input', () => {
  let t: TestServer;
  let token: string;
  let fuzz: RawClient;
  let bystander: RawClient;

  beforeAll(async () => {
    // The flood limit is tested on its own (gateway-connections.test.ts); here it must not cut the fuzzer off.
    t = await startTestServer('sqlite', { MAX_MESSAGES_PER_SECOND: 1_000_000 });
    token = (await t.api('POST', '/api/tokens', { name: 'fuzz', role: 'worker' })).body.token;
    fuzz = await registeredClient(t.server.wsUrl, token, 'fuzz');
    bystander = await registeredClient(t.server.wsUrl, token, 'bystander');
  });
  afterAll(async () => {
    fuzz?.close();
    bystander?.close();
    await t?.stop();
  });

  it('answers every frame, never crashes, and keeps the connection and others usable', async () => {
    let probe = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 5 }), async (frames) => {
        for (const f of frames) fuzz.send(f);
        const id = `probe-${probe++}`;
        fuzz.send({ type: 'heartbeat', msg_id: id });
        const ack = await fuzz.next((m) => m.type === 'heartbeat_ack' && m.reply_to === id, 5000);
        expect(ack.reply_to).toBe(id);
        fuzz.received.length = 0;
      }),
      { numRuns: 300 },
    );
    expect(fuzz.closeCode).toBeNull();
    bystander.send({ type: 'heartbeat', msg_id: 'alive' });
    expect(await bystander.type('heartbeat_ack')).toMatchObject({ reply_to: 'alive' });
    expect((await t.api('GET', '/health', undefined, null)).status).toBe(200);
  });
});
