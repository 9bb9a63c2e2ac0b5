import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A round-robin TCP load balancer for tests: each new connection goes to the next backend
 * that accepts one; a backend that refuses (dead) is skipped. Bytes are piped both ways
 * unchanged, so it fronts HTTP and WebSocket ports alike, as any TCP balancer would.
 */
export interface TcpBalancer {
  port: number;
  /** Connections sent to each backend so far, by index. */
  counts: number[];
  /** The backend index each accepted connection went to, in order (-1: none was reachable). */
  picks: number[];
  close(): Promise<void>;
}

export async function startTcpBalancer(backends: { host: string; port: number }[]): Promise<TcpBalancer> {
  const sockets = new Set<Socket>();
  const counts = backends.map(() => 0);
  const picks: number[] = [];
  let next = 0;

  /** Tries the backends in turn from the next one; resolves with a connected socket or null. */
  const connect = async (): Promise<{ index: number; socket: Socket } | null> => {
    for (let tried = 0; tried < backends.length; tried++) {
      const index = next;
      next = (next + 1) % backends.length;
      const b = backends[index] as { host: string; port: number };
      const socket = await new Promise<Socket | null>((resolve) => {
        const s = createConnection({ host: b.host, port: b.port });
        s.once('connect', () => resolve(s));
        s.once('error', () => {
          s.destroy();
          resolve(null);
        });
      });
      if (socket) return { index, socket };
    }
    return null;
  };

  const server: Server = createServer((client) => {
    client.pause();
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    void connect().then((up) => {
      picks.push(up?.index ?? -1);
      if (!up) return void client.destroy();
      if (client.destroyed) return void up.socket.destroy();
      counts[up.index] = (counts[up.index] ?? 0) + 1;
      const upstream = up.socket;
      sockets.add(upstream);
      upstream.on('close', () => {
        sockets.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = address && typeof address === 'object' ? address.port : 0;
  return {
    port,
    counts,
    picks,
    close: async () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
