import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CLI, cliEnv } from './cli.js';
import { request as httpRequest } from './http.js';

/** mulberry32: a small seeded PRNG, so a failing chaos run can be replayed with CHAOS_SEED. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of this run: CHAOS_SEED when given, otherwise a fresh one (printed by the suite). */
export function chaosSeed(): number {
  const given = process.env.CHAOS_SEED;
  if (given !== undefined && /^\d+$/.test(given)) return Number(given);
  return Math.floor(Math.random() * 2 ** 31);
}

/** An `ai-farm worker` child process (the reference worker), in a process group of its own. */
export interface WorkerProcess {
  child: ChildProcess;
  name: string;
  output(): string;
  alive(): boolean;
  /** Signals the worker process alone (its commands keep running, as with a real crash). */
  signal(sig: NodeJS.Signals): void;
  /** SIGKILLs the whole group (worker and any command it started) and waits for the worker's exit. */
  kill(): Promise<void>;
}

export function startWorkerProcess(
  serverUrl: string,
  token: string,
  name: string,
  dir: string,
): WorkerProcess {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'worker',
      '--server',
      serverUrl,
      '--token',
      token,
      '--name',
      name,
      '--id-file',
      join(dir, `${name}.id`),
      '--no-progress',
      '--verbose',
    ],
    // detached: a group of its own, so the cleanup reaches commands orphaned by a SIGKILL.
    { env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    name,
    output: () => out,
    alive,
    signal: (sig) => {
      if (alive()) child.kill(sig);
    },
    kill: async () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is gone already
      }
      if (alive()) await exited;
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
export type Json = any;

/** An API token like the server's (afm_ + 43 characters), for ADMIN_TOKEN. */
export const newToken = () => 'afm_' + randomBytes(32).toString('base64url');

/** JSON over HTTP with a bearer token (helpers/http.ts), each request bounded to 30 s. */
export const request = (base: string, method: string, path: string, body?: unknown, token?: string) =>
  httpRequest(base, method, path, body, token, 30_000);

/** A task's assignments (attempts), oldest first. */
export async function assignmentsOf(base: string, token: string, taskId: number): Promise<Json[]> {
  const r = await request(base, 'GET', `/api/tasks/${taskId}/assignments`, undefined, token);
  if (r.status !== 200) throw new Error(`GET assignments: ${r.status} ${JSON.stringify(r.body)}`);
  const rows = (Array.isArray(r.body) ? r.body : (r.body.assignments ?? r.body.items)) as Json[];
  return [...rows].sort((a, b) => a.attempt - b.attempt || a.rank - b.rank);
}

/** One line of the suite's summary. */
export interface ChaosFigure {
  name: string;
  cycles: number;
  lost: number;
  duplicated: number;
  recoverMs: number[];
  note?: string;
}

export function formatSummary(seed: number, rows: ChaosFigure[]): string {
  const stat = (xs: number[]) =>
    xs.length === 0
      ? '-'
      : `mean ${Math.round(xs.reduce((s, x) => s + x, 0) / xs.length)} ms, max ${Math.round(Math.max(...xs))} ms`;
  const lines = [`chaos suite summary (CHAOS_SEED=${seed})`];
  for (const r of rows) {
    lines.push(
      `  ${r.name}: cycles ${r.cycles}, lost ${r.lost}, duplicated ${r.duplicated}, ` +
        `time to recover ${stat(r.recoverMs)}${r.note ? `; ${r.note}` : ''}`,
    );
  }
  return lines.join('\n');
}
