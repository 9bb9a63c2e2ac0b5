import { describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { gatewayPerDescribe } from './helpers/gateway.js';
import type { TestServer } from './helpers/server.js';
import { RawClient, systemInfo } from './helpers/ws-client.js';

/**
 * The worker gateway's connections: malformed messages answered and the connection kept,
 * oversize frames and floods closed on that connection only, and bad tokens, foreign origins,
 * taken client ids and clients past MAX_CLIENTS refused. Work with tasks: gateway-tasks.test.ts.
 */
describe.each(DIALECTS)('worker gateway on %s', (dialect) => {
  let t: TestServer;
  let workerToken: string;
  let otherWorkerToken: string;
  const { clients, connect } = gatewayPerDescribe(dialect, (s) => {
    ({ t, workerToken, otherWorkerToken } = s);
  });

  it('answers every malformed message with an error and keeps the connection usable', async () => {
    const w = await RawClient.connect(t.server.wsUrl, workerToken);
    clients.push(w);
    w.send({ type: 'task_request' });
    expect(await w.type('error')).toMatchObject({ code: 'not_registered' });
    w.send('not json');
    expect(await w.type('error')).toMatchObject({ code: 'invalid_json' });
    w.send({ type: 'explode', msg_id: 9 });
    expect(await w.type('error')).toMatchObject({ code: 'unknown_type', reply_to: 9 });
    // The original client's typeless first frame registers.
    w.send(systemInfo(`w-bad-${dialect}`));
    expect(await w.type('registered')).toMatchObject({ client_id: `w-bad-${dialect}` });
    w.send({ type: 'task_progress', task_id: 1, progress: 'half', msg_id: 'x' });
    expect(await w.type('error')).toMatchObject({ code: 'invalid_message', reply_to: 'x' });
    w.send({ type: 'task_progress', task_id: 999999, progress: 1, msg_id: 'y' });
    expect(await w.type('error')).toMatchObject({ code: 'stale_attempt', reply_to: 'y' });
    w.send({ type: 'heartbeat', msg_id: 'hb', utilization: { cpu_utilization: 12, ram_utilization: 30 } });
    expect(await w.type('heartbeat_ack')).toMatchObject({ reply_to: 'hb' });
    w.close();
  });

  it('closes oversize frames and floods on that connection only', async () => {
    const bystander = await connect(`w-by-${dialect}`);
    const big = await RawClient.connect(t.server.wsUrl, workerToken);
    big.send('x'.repeat(1024 * 1024 + 10));
    expect(await big.closed()).toBe(1009);
    const flood = await RawClient.connect(t.server.wsUrl, workerToken);
    flood.send(systemInfo(`w-flood-${dialect}`));
    for (let i = 0; i < 3000 && flood.ws.readyState === flood.ws.OPEN; i++) flood.send({ type: 'heartbeat' });
    expect(await flood.closed()).toBe(1008);
    bystander.send({ type: 'heartbeat', msg_id: 'still-here' });
    expect(await bystander.type('heartbeat_ack')).toMatchObject({ reply_to: 'still-here' });
    bystander.close();
  });

  it('refuses bad tokens, foreign origins, other tokens taking a client id, and clients past MAX_CLIENTS', async () => {
    await expect(RawClient.connect(t.server.wsUrl, null)).rejects.toThrow(/401/);
    await expect(RawClient.connect(t.server.wsUrl, 'afm_nope')).rejects.toThrow(/401/);
    await expect(
      RawClient.connect(t.server.wsUrl, t.adminToken, { origin: 'https://evil.example' }),
    ).rejects.toThrow(/403/);
    const userToken = (await t.api('POST', '/api/tokens', { name: 'u', role: 'user' })).body.token;
    await expect(RawClient.connect(t.server.wsUrl, userToken)).rejects.toThrow(/403/);
    // Also served at /ws on the API port, with the token in the query string.
    const viaApi = await RawClient.connect(`${t.url.replace('http', 'ws')}/ws?token=${workerToken}`, null);
    viaApi.send({ type: 'register', ...systemInfo(`w-owned-${dialect}`) });
    await viaApi.type('registered');
    viaApi.close();
    const thief = await RawClient.connect(t.server.wsUrl, otherWorkerToken);
    thief.send({ type: 'register', ...systemInfo(`w-owned-${dialect}`) });
    expect(await thief.type('error')).toMatchObject({ code: 'client_id_taken' });
    expect(await thief.closed()).toBe(4003);

    // One token or one address may hold at most MAX_CLIENTS - 1: the crowd comes from two of each.
    const crowd: RawClient[] = [];
    for (let i = 0; i < 20; i++) {
      const token = i % 2 === 0 ? workerToken : otherWorkerToken;
      const localAddress = i < 10 ? '127.0.0.1' : '127.0.0.2';
      crowd.push(await RawClient.connect(t.server.wsUrl, token, {}, { localAddress }));
    }
    const extra = await RawClient.connect(t.server.wsUrl, workerToken, {}, { localAddress: '127.0.0.3' });
    expect(await extra.closed()).toBe(4004);
    expect(extra.closeReason).toMatch(/MAX_CLIENTS=20/);
    for (const c of crowd) c.close();
  });
});
