import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { freePort } from './ports.js';
import { sleep } from './wait.js';

/**
 * A MariaDB server of a test's own (its own datadir, port and socket), so the test can
 * stop and start it without touching the machine's shared MariaDB that other suites use.
 * Root has no password, as on the shared one.
 */
export interface PrivateMariadb {
  port: number;
  /** mysql://root@127.0.0.1:<port> (no database). */
  url: string;
  /** True while mariadbd runs. */
  running(): boolean;
  /** Stops mariadbd with `signal` (SIGKILL: a crash) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts mariadbd again on the same datadir and port; resolves once it answers. */
  start(): Promise<void>;
  /** Stops it and removes its files. */
  close(): Promise<void>;
}

const MARIADBD = '/usr/sbin/mariadbd';

/** Creates a datadir with mariadb-install-db and starts mariadbd on a free loopback port. */
export async function startPrivateMariadb(): Promise<PrivateMariadb> {
  const dir = mkdtempSync(join(tmpdir(), 'aifarm-mariadb-'));
  const datadir = join(dir, 'data');
  // Its own temporary folder: a starting mariadbd deletes every `#sql*` file in its tmpdir, which
  // in the shared /tmp are the machine's MariaDB's temporary tables in use (other tests then fail
  // with "Error on delete of '/tmp/#sql-temptable-...'").
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const install = spawnSync(
    'mariadb-install-db',
    [
      '--no-defaults',
      `--datadir=${datadir}`,
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
      `--tmpdir=${tmp}`,
      // mariadbd refuses to run as root unless told to; harmless for other users.
      `--user=${process.getuid?.() === 0 ? 'root' : (process.env.USER ?? 'root')}`,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (install.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mariadb-install-db failed (${install.status}): ${install.stderr || install.stdout}`);
  }
  const port = await freePort();
  const url = `mysql://root@127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = '';

  const start = async () => {
    log = '';
    const c = spawn(
      MARIADBD,
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        `--tmpdir=${tmp}`,
        `--port=${port}`,
        `--socket=${join(dir, 'mariadbd.sock')}`,
        `--pid-file=${join(dir, 'mariadbd.pid')}`,
        '--bind-address=127.0.0.1',
        '--skip-name-resolve',
        '--skip-log-bin',
        '--innodb-buffer-pool-size=32M',
        ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    c.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    child = c;
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`mariadbd exited:\n${log}`);
      try {
        const conn = await createConnection({ host: '127.0.0.1', port, user: 'root', connectTimeout: 2000 });
        await conn.end();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`mariadbd did not answer in 60 s: ${String(err)}\n${log}`);
        await sleep(200);
      }
    }
  };
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (!running()) return;
    child?.kill(signal);
    const timer = setTimeout(() => child?.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };

  try {
    await start();
  } catch (err) {
    await stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    url,
    running,
    stop,
    start,
    close: async () => {
      await stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
