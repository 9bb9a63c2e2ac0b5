import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy between the server under test and a real database, so a test can cut the
 * database off (every connection dropped, new ones refused) and bring it back.
 */
export interface TcpProxy {
  port: number;
  /** Drops every connection and stops listening: the database is unreachable. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /**
   * A network partition: connections stay open but nothing gets through, and new ones are
   * accepted and then ignored (as when the database host vanishes without a reset).
   */
  freeze(): void;
  /** Heals the partition: the frozen connections are reset, new ones pass again. */
  thaw(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  let frozen = false;

  const listen = async () => {
    const s = createServer((client) => {
      if (frozen) {
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        client.on('error', () => client.destroy());
        return;
      }
      const upstream = createConnection({ host: targetHost, port: targetPort });
      for (const sock of [client, upstream]) {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        // A cut connection errors on both sides; that is the point, not a test failure.
        sock.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (d: Buffer) => {
        if (!frozen) upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        if (!frozen) client.write(d);
      });
      client.on('end', () => upstream.end());
      upstream.on('end', () => client.end());
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
    });
    const address = s.address();
    if (address && typeof address === 'object') port = address.port;
    server = s;
  };
  const stop = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    sockets.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };

  await listen();
  return {
    get port() {
      return port;
    },
    cut: stop,
    restore: listen,
    freeze: () => {
      frozen = true;
    },
    thaw: () => {
      frozen = false;
      for (const sock of sockets) sock.destroy();
      sockets.clear();
    },
    close: stop,
  };
}
