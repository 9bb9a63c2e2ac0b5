/**
 * One simulated rank of bench/large-round.ts, in a process of its own (so the server's event
 * loop and memory are the server's alone): uploads its update with the reference worker's
 * resumable upload, or downloads the new global model with its resumable download. With
 * CUT_AT, the upload goes through a proxy in this process that cuts the connection once, after
 * that many bytes, and forwards the rest; the worker resumes from the server's offset. Prints
 * one JSON line: wall time, bytes sent (through the proxy), resumptions.
 *
 *   MODE=upload|download SERVER=http://... TOKEN=... FILE=... [URL=... ATTEMPT= CLIENT= CUT_AT=]
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { downloadModel, uploadUpdate } from '../src/worker/executors/model-transfer.js';

const env = (k: string): string => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};

/** A proxy to `target` that cuts its first connection after `cutAt` client bytes. */
async function proxy(target: URL, cutAt: number) {
  let sent = 0;
  let cut = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d: Buffer) => {
      if (!cut && sent + d.length >= cutAt) {
        cut = true;
        const part = d.subarray(0, cutAt - sent);
        sent += part.length;
        upstream.write(part, () => {
          client.destroy();
          upstream.destroy();
        });
        return;
      }
      sent += d.length;
      if (!upstream.write(d)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (d: Buffer) => client.write(d));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return {
    url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`,
    sent: () => sent,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const t0 = performance.now();
const server = env('SERVER');
const options = { token: env('TOKEN'), timeoutMs: 600_000, backoff: { initialMs: 50, maxMs: 1000 } };
if (env('MODE') === 'upload') {
  const cutAt = process.env.CUT_AT ? Number(process.env.CUT_AT) : null;
  const p = cutAt === null ? null : await proxy(new URL(server), cutAt);
  const r = await uploadUpdate(
    {
      uploadUrl: env('URL'),
      file: env('FILE'),
      attempt: Number(env('ATTEMPT')),
      numSamples: 1,
      clientId: env('CLIENT'),
    },
    { ...options, serverUrl: p?.url ?? server },
  );
  await p?.close();
  if (!r.ok) throw new Error(`upload refused: ${r.status} ${r.code} ${r.message}`);
  console.log(JSON.stringify({ ms: performance.now() - t0, sent: p?.sent() ?? null, resumed: r.resumed }));
} else {
  const r = await downloadModel(env('URL'), env('FILE'), { ...options, serverUrl: server });
  if (!r.ok) throw new Error(`download refused: ${r.status} ${r.code} ${r.message}`);
  console.log(JSON.stringify({ ms: performance.now() - t0, bytes: r.bytes, resumed: r.resumed }));
}
