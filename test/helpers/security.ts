import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { App } from '../../src/http/app.js';

/** One route of the running app, as Fastify's router holds it (HEAD included). */
export interface RouteEntry {
  method: string;
  url: string;
}

/**
 * Every route of the running app, read from its router (`printRoutes`), so a route added
 * tomorrow shows up here without anyone listing it. Hidden routes (the panel's catch-all,
 * /openapi.json, the docs' assets) are included, unlike in the OpenAPI document.
 */
export function listRoutes(app: App): RouteEntry[] {
  const tree = app.printRoutes({ commonPrefix: false });
  const stack: string[] = [];
  const out: RouteEntry[] = [];
  for (const line of tree.split('\n')) {
    const m = /^((?:│ {3}| {4})*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = (m[1] ?? '').length / 4;
    stack.length = depth;
    stack.push(m[2] ?? '');
    const url = stack.join('');
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim())) {
      if (method) out.push({ method, url });
    }
  }
  return out;
}

/** Files people upload by mistake instead of safetensors, and where they came from. */
export interface WrongFormats {
  /** torch.save(..., _use_new_zipfile_serialization=False): a bare pickle. */
  picklePt: Buffer;
  /** torch.save's default format: a zip holding a pickle. */
  zipPt: Buffer;
  /** An ordinary zip archive (Python's zipfile). */
  zip: Buffer;
  /** 'torch' when python3-torch made the .pt files, else 'pickle module' (said in the summary). */
  source: 'torch' | 'pickle module';
}

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/**
 * Makes the wrong-format corpus with real tools: PyTorch when python3-torch is installed,
 * otherwise Python's own pickle module writes the same kind of bytes (a state dict of lists).
 */
export function wrongFormats(): WrongFormats {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-sec-'));
  try {
    let source: WrongFormats['source'] = 'torch';
    try {
      execFileSync(
        PYTHON,
        [
          '-c',
          `import torch, sys
t = {'a': torch.zeros(4), 'b': torch.ones(2, 2)}
torch.save(t, sys.argv[1], _use_new_zipfile_serialization=False)
torch.save(t, sys.argv[2])`,
          join(dir, 'legacy.pt'),
          join(dir, 'zip.pt'),
        ],
        { stdio: 'pipe' },
      );
    } catch {
      source = 'pickle module';
      execFileSync(
        PYTHON,
        [
          '-c',
          `import pickle, sys, zipfile
t = {'a': [0.0] * 4, 'b': [[1.0, 1.0], [1.0, 1.0]]}
open(sys.argv[1], 'wb').write(pickle.dumps(t, 2))
with zipfile.ZipFile(sys.argv[2], 'w') as z: z.writestr('archive/data.pkl', pickle.dumps(t, 2))`,
          join(dir, 'legacy.pt'),
          join(dir, 'zip.pt'),
        ],
        { stdio: 'pipe' },
      );
    }
    execFileSync(
      PYTHON,
      [
        '-c',
        `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z: z.writestr('model.safetensors', b'x' * 64)`,
        join(dir, 'plain.zip'),
      ],
      { stdio: 'pipe' },
    );
    return {
      picklePt: readFileSync(join(dir, 'legacy.pt')),
      zipPt: readFileSync(join(dir, 'zip.pt')),
      zip: readFileSync(join(dir, 'plain.zip')),
      source,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Everything written to this process's stdout and stderr while capturing (not passed on). */
export interface OutputCapture {
  text(): string;
  restore(): void;
}

export function captureOutput(): OutputCapture {
  const chunks: string[] = [];
  const originals = { out: process.stdout.write, err: process.stderr.write };
  const grab = (chunk: unknown, ...rest: unknown[]): boolean => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  };
  process.stdout.write = grab as typeof process.stdout.write;
  process.stderr.write = grab as typeof process.stderr.write;
  return {
    text: () => chunks.join(''),
    restore: () => {
      process.stdout.write = originals.out;
      process.stderr.write = originals.err;
    },
  };
}

/** Every file under `dir` (the server's LOG_DIR), by name. */
export function readLogDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir)) out[f] = readFileSync(join(dir, f), 'utf8');
  return out;
}

/**
 * Where any secret, or a 16-character piece from its middle (enough to recognise it),
 * occurs in any text: "server.log: admin token".
 */
export function secretHits(texts: Record<string, string>, secrets: Map<string, string>): string[] {
  const hits: string[] = [];
  for (const [where, text] of Object.entries(texts)) {
    for (const [what, secret] of secrets) {
      const piece = secret.length > 24 ? secret.slice(6, 22) : secret;
      if (text.includes(secret) || text.includes(piece)) hits.push(`${where}: ${what}`);
    }
  }
  return hits;
}

/**
 * A slowloris attack: `sockets` connections that each send a request line and then one header
 * byte every `byteEveryMs`, never finishing the headers. A dropped socket is replaced at once
 * (the attack is kept up) until `stop()`; after that, the server alone must close the rest.
 */
export class Slowloris {
  opened = 0;
  /** Closed by the server (not by us). */
  dropped = 0;
  /** Of those, answered 408 first. */
  answered408 = 0;
  private readonly live = new Set<Socket>();
  private stopped = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly byteEveryMs: number,
  ) {}

  start(sockets: number): void {
    for (let i = 0; i < sockets; i++) this.open(i * 7);
  }

  private open(stagger: number): void {
    if (this.stopped) return;
    const s = connect(this.port, this.host);
    this.opened++;
    this.live.add(s);
    const text = `GET /api/tasks HTTP/1.1\r\nHost: ${this.host}\r\nX-Slow: ${'a'.repeat(4000)}`;
    let i = 0;
    let got = '';
    let timer: NodeJS.Timeout | null = null;
    s.on('connect', () => {
      s.write('GET /api/tasks HTTP/1.1\r\n');
      i = 'GET /api/tasks HTTP/1.1\r\n'.length;
      setTimeout(() => {
        timer = setInterval(() => {
          if (i < text.length && !s.destroyed) s.write(text[i++] ?? '');
        }, this.byteEveryMs);
      }, stagger);
    });
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      if (timer) clearInterval(timer);
      this.live.delete(s);
      if ((s as Socket & { byUs?: boolean }).byUs) return;
      this.dropped++;
      if (got.startsWith('HTTP/1.1 408')) this.answered408++;
      this.open(0);
    });
  }

  /** Stops replacing dropped sockets; the ones open stay open until the server closes them. */
  stop(): void {
    this.stopped = true;
  }

  get openNow(): number {
    return this.live.size;
  }

  /** Ends whatever is still open (cleanup). */
  destroy(): void {
    this.stopped = true;
    for (const s of this.live) {
      (s as Socket & { byUs?: boolean }).byUs = true;
      s.destroy();
    }
  }
}

/** The HTTP status a WebSocket upgrade is refused with, or 101 when it is accepted. */
export function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.once('error', reject);
  });
}
