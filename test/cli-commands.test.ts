import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliEnv, runCli, startCliServer } from './helpers/cli.js';
import { createTestDatabase, DIALECTS, TEST_MYSQL_URL, type TestDatabase } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { sleep } from './helpers/wait.js';

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'aifarm-cli-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('ai-farm with a bad configuration', () => {
  it('reports every problem, naming the keys, and exits 2 with nothing started', async () => {
    const dir = mkdtempSync(join(scratch, 'bad-'));
    const env = {
      SERVER_PORT: 'abc',
      RATE_LIMIT: 'bad',
      LOG_DIR: join(dir, 'logs'),
      DATA_DIR: join(dir, 'data'),
    };
    const r = await runCli(['server'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Invalid configuration/);
    expect(r.stderr).toMatch(/SERVER_PORT.*"abc"/);
    expect(r.stderr).toMatch(/RATE_LIMIT.*"bad"/);
    expect(r.stdout).not.toMatch(/AI Farm server on/);
    // Nothing was started: no log files, no database.
    expect(existsSync(join(dir, 'logs'))).toBe(false);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('reports problems from the file, the environment and the flags together', async () => {
    const dir = mkdtempSync(join(scratch, 'bad-'));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ SERVER_PROT: 8000, db_config: { host: 'h', port: 'x' } }));
    const r = await runCli(['server', '--config', file, '--set', 'MAX_CLIENTS=0', '--set', 'NOPE'], {
      CONNECTION_TIMEOUT: '-1',
      LOG_DIR: join(dir, 'logs'),
      DATA_DIR: join(dir, 'data'),
    });
    expect(r.code).toBe(2);
    for (const what of ['SERVER_PROT', 'db_config.port', 'MAX_CLIENTS', 'CONNECTION_TIMEOUT', '--set NOPE'])
      expect(r.stderr).toContain(what);
    expect(existsSync(join(dir, 'logs'))).toBe(false);
  });

  it('exits 2 on an unknown command or option', async () => {
    expect((await runCli(['serve'])).code).toBe(2);
    expect((await runCli(['server', '--no-such-flag'])).code).toBe(2);
  });
});

describe('ai-farm config', () => {
  it('prints the effective configuration: defaults < file < environment < flags', async () => {
    const file = join(scratch, 'layers.json');
    writeFileSync(
      file,
      JSON.stringify({
        SERVER_PORT: 1111,
        MAX_CLIENTS: 5,
        DEFAULT_EPOCHS: 7,
        LOG_DIR: 'file-logs',
        db_config: { host: 'dbhost', user: 'farm', password: 'file-db-secret', database: 'farm' },
      }),
    );
    const r = await runCli(['config', '--config', file, '--port', '3333', '--set', 'LOG_DIR=flag-logs'], {
      SERVER_PORT: '2222',
      MAX_CLIENTS: '6',
      LOG_DIR: 'env-logs',
    });
    expect(r.code).toBe(0);
    const c = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(c.SERVER_PORT).toBe(3333); // flag over env over file
    expect(c.MAX_CLIENTS).toBe(6); // env over file
    expect(c.DEFAULT_EPOCHS).toBe(7); // file over default
    expect(c.DEFAULT_BATCH_SIZE).toBe(32); // default
    expect(c.LOG_DIR).toBe('flag-logs');
    expect(c.db_config).toMatchObject({ host: 'dbhost', user: 'farm', database: 'farm' });
  });

  it('reads the file named by AI_FARM_CONFIG', async () => {
    const file = join(scratch, 'env-named.json');
    writeFileSync(file, JSON.stringify({ CHECKPOINT_FREQUENCY: 9 }));
    const r = await runCli(['config'], { AI_FARM_CONFIG: file });
    expect(JSON.parse(r.stdout)).toMatchObject({ CHECKPOINT_FREQUENCY: 9 });
  });

  it('masks ADMIN_TOKEN, ADMIN_PASSWORD, the db_config password and the DATABASE_URL password', async () => {
    const file = join(scratch, 'secrets.json');
    writeFileSync(file, JSON.stringify({ db_config: { host: 'h', password: 'db-config-secret' } }));
    const r = await runCli(['config', '-c', file], {
      ADMIN_TOKEN: 'afm_admin-token-secret-0123456789',
      ADMIN_PASSWORD: 'panel-password-secret',
      DATABASE_URL: 'mysql://farm:url-secret@db.example:3306/farm',
      REDIS_URL: 'redis://:redis-secret@cache:6379',
    });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/secret/);
    const c = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(c.ADMIN_TOKEN).toBe('********');
    expect(c.ADMIN_PASSWORD).toBe('********');
    expect(c.DATABASE_URL).toBe('mysql://farm:********@db.example:3306/farm');
    expect(c.REDIS_URL).toBe('redis://:********@cache:6379');
    expect(c.db_config).toMatchObject({ host: 'h', password: '********' });
  });
});

describe.each(DIALECTS)('ai-farm db migrate on %s', (dialect) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(dialect);
  });
  afterAll(async () => db?.drop());

  it('creates the database when missing, applies the migrations, then has nothing to do', async () => {
    const env = { DATABASE_URL: db.url };
    const first = await runCli(['db', 'migrate'], env);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/applied: 001-initial/);
    expect(first.stdout).not.toMatch(/@.*:.*@/); // no password in the location it prints
    const again = await runCli(['db', 'migrate'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/database is up to date/);
    if (dialect === 'sqlite') expect(existsSync(db.url)).toBe(true);
    else expect(await mysqlCharset(db.url)).toBe('utf8mb4');
  });

  it.runIf(dialect === 'mysql')(
    'reaches MySQL through db_config in a config file, as the seed wrote it',
    async () => {
      const u = new URL(TEST_MYSQL_URL);
      const name = `${decodeURIComponent(new URL(db.url).pathname.slice(1))}_cfg`;
      const file = join(db.dir, 'seed-style.json');
      writeFileSync(
        file,
        JSON.stringify({
          db_config: {
            host: u.hostname,
            port: Number(u.port || 3306),
            user: decodeURIComponent(u.username || 'root'),
            password: decodeURIComponent(u.password),
            database: name,
            charset: 'utf8mb4',
            collation: 'utf8mb4_general_ci',
          },
        }),
      );
      try {
        const r = await runCli(['db', 'migrate', '--config', file]);
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/applied: 001-initial/);
        expect(r.stdout).toContain(`/${name}`);
      } finally {
        const root = await createConnection(TEST_MYSQL_URL);
        await root.query(`DROP DATABASE IF EXISTS \`${name}\``);
        await root.end();
      }
    },
  );
});

describe.each(DIALECTS)('ai-farm tokens on %s', (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(dialect);
  });
  afterAll(async () => t?.stop());
  const env = () => ({ DATABASE_URL: t.db.url });

  it('creates a token that works against the running server, lists it, and revokes it', async () => {
    const created = await runCli(
      ['tokens', 'create', '--name', 'cli-user', '--role', 'user', '--json'],
      env(),
    );
    expect(created.code).toBe(0);
    const made = JSON.parse(created.stdout) as { id: string; token: string; role: string; name: string };
    expect(made).toMatchObject({ role: 'user', name: 'cli-user', created_by: 'cli' });
    expect(made.token).toMatch(/^afm_/);

    const task = await t.api('POST', '/api/tasks', { type: 'cli', requirements: {} }, made.token);
    expect(task.status).toBe(201);
    expect(task.body.created_by).toBe('cli-user');

    const listed = await runCli(['tokens', 'list', '--json'], env());
    expect(listed.code).toBe(0);
    const list = JSON.parse(listed.stdout) as { id: string; name: string }[];
    expect(list.map((x) => x.id)).toContain(made.id);
    expect(listed.stdout).not.toContain(made.token);
    expect(listed.stdout).not.toMatch(/token_hash/);

    const revoked = await runCli(['tokens', 'revoke', made.id], env());
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain(`revoked ${made.id}`);
    const after = await t.api('GET', '/api/tasks', undefined, made.token);
    expect(after.status).toBe(401);
    expect(after.body.error.code).toBe('unauthorized');

    const active = JSON.parse((await runCli(['tokens', 'list', '--json'], env())).stdout) as { id: string }[];
    expect(active.map((x) => x.id)).not.toContain(made.id);
    const all = JSON.parse((await runCli(['tokens', 'list', '--all', '--json'], env())).stdout) as {
      id: string;
      revoked_at: string | null;
    }[];
    expect(all.find((x) => x.id === made.id)?.revoked_at).toMatch(/Z$/);
  });

  // Output and usage do not depend on the dialect.
  it.runIf(dialect === 'sqlite')('prints for people, refuses a bad role and an unknown id', async () => {
    const plain = await runCli(['tokens', 'create', '-n', 'robot', '-r', 'worker'], env());
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/created worker token tok_\w+ \(robot\); shown this once:\nafm_\S+/);
    const table = await runCli(['tokens', 'list'], env());
    expect(table.stdout).toMatch(/robot.*worker/);
    expect(table.stdout).not.toMatch(/afm_/);
    const role = await runCli(['tokens', 'create', '-n', 'x', '-r', 'root'], env());
    expect(role.code).toBe(2);
    expect(role.stderr).toMatch(/--role must be one of admin, user, worker/);
    const unknown = await runCli(['tokens', 'revoke', 'tok_nope'], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/token tok_nope does not exist/);
  });
});

describe('terminal output', () => {
  it('is JSON lines when stdout is not a terminal', async () => {
    const dir = mkdtempSync(join(scratch, 'json-'));
    const s = await startCliServer([], {
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      DATA_DIR: join(dir, 'data'),
      LOG_DIR: join(dir, 'logs'),
      ADMIN_TOKEN: 'afm_' + 'j'.repeat(43),
    });
    try {
      const line = s
        .stdout()
        .split('\n')
        .find((l) => l.includes('AI Farm server listening'));
      expect(JSON.parse(line as string)).toMatchObject({ level: 30, msg: 'AI Farm server listening' });
    } finally {
      expect((await s.stop('SIGTERM')).code).toBe(0);
    }
  });

  it.runIf(existsSync('/usr/bin/script'))('is human-readable (pino-pretty) on a terminal', async () => {
    const dir = mkdtempSync(join(scratch, 'tty-'));
    // util-linux `script` runs the CLI on a pseudo-terminal; `exec` makes node its child.
    const child = spawn('script', ['-qefc', `exec ${process.execPath} ${CLI} server`, '/dev/null'], {
      env: cliEnv({
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: '0',
        WEBSOCKET_PORT: '0',
        MODEL_SERVER_PORT: '0',
        DATA_DIR: join(dir, 'data'),
        LOG_DIR: join(dir, 'logs'),
        ADMIN_TOKEN: 'afm_' + 't'.repeat(43),
      }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const end = Date.now() + 20_000;
      while (!/AI Farm server on/.test(out) && Date.now() < end) await sleep(50);
      const line = out.split(/\r?\n/).find((l) => l.includes('AI Farm server listening'));
      expect(line).toBeDefined();
      expect(line).toMatch(/INFO/);
      expect(line?.trimStart().startsWith('{')).toBe(false);
    } finally {
      for (const pid of childrenOf(child.pid as number)) process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      expect(await exited).toBe(0);
      clearTimeout(timer);
    }
  });
});

/** Process ids of the direct children of `pid` (Linux). */
function childrenOf(pid: number): number[] {
  const file = `/proc/${pid}/task/${pid}/children`;
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

async function mysqlCharset(url: string): Promise<string | undefined> {
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  const root = await createConnection(TEST_MYSQL_URL);
  try {
    const [rows] = await root.query(
      'SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [name],
    );
    return (rows as { cs: string }[])[0]?.cs;
  } finally {
    await root.end();
  }
}
