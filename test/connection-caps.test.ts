import { afterEach, describe, expect, it } from 'vitest';
import { DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { RawClient, systemInfo } from './helpers/ws-client.js';
import { sleep } from './helpers/wait.js';

/**
 * One token cannot take every connection (issue 11, point 6): connections are capped per
 * token and per address, below MAX_CLIENTS, and sockets that never register are dropped
 * after REGISTER_TIMEOUT. The hog connects from 127.0.0.2, as another machine would.
 */
describe.each(DIALECTS)('connection caps on %s', (dialect) => {
  let t: TestServer | undefined;
  const sockets: RawClient[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.close();
    await t?.stop();
    t = undefined;
  });

  const workerToken = async (server: TestServer, name: string) =>
    (await server.api('POST', '/api/tokens', { name, role: 'worker' })).body.token as string;

  /** Opens sockets until the server refuses one (bounded); returns those opened and the refusal. */
  const hog = async (server: TestServer, token: string, localAddress: string, most: number) => {
    for (let i = 0; i < most; i++) {
      try {
        sockets.push(await RawClient.connect(server.server.wsUrl, token, {}, { localAddress }));
      } catch (err) {
        return { opened: i, refusal: (err as Error).message };
      }
    }
    return { opened: most, refusal: null };
  };

  it('one token never fills MAX_CLIENTS: past its cap it gets 429, and another token still registers', async () => {
    t = await startTestServer(dialect, { MAX_CLIENTS: 10, REGISTER_TIMEOUT: 60 });
    const hogToken = await workerToken(t, 'hog');
    const { opened, refusal } = await hog(t, hogToken, '127.0.0.2', 20);
    // MAX_CONNECTIONS_PER_TOKEN is 50 by default, held at MAX_CLIENTS - 1.
    expect(opened).toBe(9);
    expect(refusal).toMatch(/HTTP 429/);
    const legit = await RawClient.connect(t.server.wsUrl, await workerToken(t, 'legit'));
    sockets.push(legit);
    legit.send({ type: 'register', msg_id: 'r', ...systemInfo(`legit-${dialect}`) });
    expect(await legit.type('registered', 20_000)).toMatchObject({ client_id: `legit-${dialect}` });
  });

  it('caps connections per address across tokens, and gives places back when sockets close', async () => {
    t = await startTestServer(dialect, { MAX_CONNECTIONS_PER_ADDRESS: 3, REGISTER_TIMEOUT: 60 });
    const a = await workerToken(t, 'addr-a');
    const b = await workerToken(t, 'addr-b');
    const first = await hog(t, a, '127.0.0.2', 2);
    expect(first.opened).toBe(2);
    const second = await hog(t, b, '127.0.0.2', 5);
    expect(second).toEqual({ opened: 1, refusal: 'HTTP 429' });
    // Another address is not affected.
    expect((await hog(t, b, '127.0.0.3', 1)).opened).toBe(1);
    // A closed socket's place is free again (the close reaches the server asynchronously).
    const gone = sockets[0]!;
    gone.ws.close();
    await gone.closed(10_000);
    const end = Date.now() + 10_000;
    let again = await hog(t, a, '127.0.0.2', 1);
    while (again.opened === 0 && Date.now() < end) {
      await sleep(100);
      again = await hog(t, a, '127.0.0.2', 1);
    }
    expect(again.opened).toBe(1);
  });

  it('drops sockets that do not register within REGISTER_TIMEOUT, freeing their places', async () => {
    t = await startTestServer(dialect, { REGISTER_TIMEOUT: 1, MAX_CONNECTIONS_PER_TOKEN: 2 });
    const token = await workerToken(t, 'silent');
    const { opened } = await hog(t, token, '127.0.0.2', 2);
    expect(opened).toBe(2);
    for (const s of sockets) {
      expect(await s.closed(15_000)).toBe(4009);
      expect(s.closeReason).toMatch(/register within 1 s/);
    }
    // The places are free again: a worker of the same token registers.
    const w = await RawClient.connect(t.server.wsUrl, token);
    sockets.push(w);
    w.send({ type: 'register', msg_id: 'r', ...systemInfo(`after-${dialect}`) });
    expect(await w.type('registered', 20_000)).toMatchObject({ client_id: `after-${dialect}` });
  });
});
