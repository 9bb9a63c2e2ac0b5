import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { buildWasm } from '../scripts/build-wasm.js';
import { TEST_MYSQL_URL } from './helpers/db.js';

const ROOT = join(import.meta.dirname, '..');

/**
 * Runs once before every test file:
 * - storage tests run on SQLite and on MariaDB, and the bus tests on Redis: when either
 *   does not answer, scripts/ensure-services.sh starts them (as `.ci/run` does), and we
 *   fail clearly if MariaDB is still missing;
 * - the WebAssembly kernels are assembled from their .wat sources (in src/ and dist/);
 * - the CLI tests run the real `bin/ai-farm.js`, which loads dist/: it is rebuilt here when
 *   a source file is newer than it, so the tests never run yesterday's code.
 */
export default async function setup(): Promise<void> {
  if (!(await mariadbAnswers()) || !(await redisAnswers())) {
    try {
      execFileSync('bash', [join(ROOT, 'scripts/ensure-services.sh')], { stdio: 'inherit' });
    } catch {
      // Reported below with what to do.
    }
    if (!(await mariadbAnswers())) {
      throw new Error(
        `MariaDB is not reachable at ${TEST_MYSQL_URL}. ` +
          'Run scripts/ensure-services.sh, or set AI_FARM_TEST_MYSQL_URL.',
      );
    }
  }
  buildIfStale();
  await buildWasm();
}

async function mariadbAnswers(): Promise<boolean> {
  try {
    const conn = await createConnection({ uri: TEST_MYSQL_URL, connectTimeout: 5000 });
    await conn.query('select 1');
    await conn.end();
    return true;
  } catch {
    return false;
  }
}

/** The Redis bus tests need a Redis server (AI_FARM_TEST_REDIS_URL, default local). */
async function redisAnswers(): Promise<boolean> {
  const url = new URL(process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname, port: Number(url.port || 6379) });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(3000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    // +PONG, or -NOAUTH from a server with a password: either way Redis is there.
    socket.on('data', (d: Buffer) => done(/^[+-]/.test(d.toString())));
  });
}

/** Compiles src/ to dist/ (about 6 s) when any source file is newer than the last build. */
function buildIfStale(): void {
  const built = join(ROOT, 'dist/cli/main.js');
  const builtAt = existsSync(built) ? statSync(built).mtimeMs : 0;
  if (newestSource(join(ROOT, 'src')) <= builtAt) return;
  try {
    execFileSync(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
      {
        cwd: ROOT,
        stdio: 'pipe',
      },
    );
  } catch (err) {
    // tsc still emits when other files have type errors (the typecheck step reports them);
    // only a build that produced no CLI is fatal here.
    if (!existsSync(built)) throw err;
  }
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts'))
      newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}
