import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { CONFIG_KEYS } from '../../src/config/schema.js';

/** The real command line, as users run it (dist/ is kept fresh by test/global-setup.ts). */
export const CLI = join(import.meta.dirname, '../../bin/ai-farm.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment a child CLI sees: this process's, minus every config key and
 * AI_FARM_CONFIG (so a developer's own settings never leak into a test), plus `env`.
 */
export function cliEnv(env: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const key of [...CONFIG_KEYS, 'AI_FARM_CONFIG']) delete out[key];
  // Colours would make stdout differ between terminals and pipes.
  out.NO_COLOR = '1';
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Runs `ai-farm <args>` to completion. */
export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: cliEnv(env),
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return collect(child, opts.timeoutMs ?? 30_000);
}

function collect(child: ChildProcess, timeoutMs: number): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`CLI did not finish in ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * The environment of an `ai-farm server` child on a test database: its folders under the
 * database's scratch folder, no rate limit, `adminToken` as ADMIN_TOKEN, then `extra`.
 */
export function serverEnv(
  db: { url: string; dir: string },
  adminToken: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    SERVER_HOST: '127.0.0.1',
    SERVER_PORT: '0',
    DATABASE_URL: db.url,
    DATA_DIR: join(db.dir, 'data'),
    LOG_DIR: join(db.dir, 'logs'),
    MODEL_CACHE_DIR: join(db.dir, 'models'),
    CHECKPOINT_DIR: join(db.dir, 'checkpoints'),
    RATE_LIMIT: 'off',
    ADMIN_TOKEN: adminToken,
    ...extra,
  };
}

/** A `ai-farm server` child process. */
export interface CliServer {
  child: ChildProcess;
  /** Base URL it printed, e.g. http://127.0.0.1:41234. */
  url: string;
  stdout(): string;
  stderr(): string;
  /** True while the process runs. */
  alive(): boolean;
  /** Resolves when the process has exited. */
  exited: Promise<CliResult>;
  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<CliResult>;
}

/**
 * Starts `ai-farm server <args>` and waits until it prints the URL it listens on.
 * Pass SERVER_PORT=0 (or --port 0) to get a free port; the other ports default to 0 here.
 */
export async function startCliServer(
  args: string[],
  env: Record<string, string | undefined>,
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliServer> {
  const child = spawn(process.execPath, [CLI, 'server', ...args], {
    // The worker and model ports default to fixed numbers; tests run side by side.
    env: cliEnv({ WEBSOCKET_PORT: '0', MODEL_SERVER_PORT: '0', ...env }),
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<CliResult>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err })),
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start\nstdout: ${out}\nstderr: ${err}`));
    }, opts.timeoutMs ?? 30_000);
    const check = () => {
      const m = /AI Farm server on (http:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', check);
    void exited.then((r) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`));
    });
  });
  return {
    child,
    url,
    stdout: () => out,
    stderr: () => err,
    alive: () => child.exitCode === null && child.signalCode === null,
    exited,
    stop: async (signal = 'SIGTERM', timeoutMs = 15_000) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
