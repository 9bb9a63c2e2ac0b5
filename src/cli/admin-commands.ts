import type { Command } from 'commander';
import { TokenService } from '../auth/token-service.js';
import { withSharedTokenCache } from '../cache/token-cache.js';
import type { Config } from '../config/schema.js';
import { maskedConfig } from '../config/load.js';
import { silentLogger } from '../observability/logger.js';
import { ROLES, type Role } from '../storage/schema.js';
import { openDatabase, resolveDatabaseTarget, type DatabaseHandle } from '../storage/db.js';
import { migrateToLatest } from '../storage/migrate.js';
import { systemClock } from '../storage/values.js';
import { addConfigOptions, configFromFlags, reportConfigErrors, type ConfigFlags } from './config-options.js';

type SetExit = (code: number) => void;

/** Runs `fn` with a migrated database from the command's configuration. */
async function withDatabase(
  flags: ConfigFlags,
  setExit: SetExit,
  fn: (h: DatabaseHandle, c: Config) => Promise<void>,
) {
  const r = configFromFlags(flags, process.env);
  if (!r.ok) return setExit(reportConfigErrors(r.errors));
  const handle = await openDatabase(resolveDatabaseTarget(r.config));
  try {
    await migrateToLatest(handle.db, handle.dialect);
    await fn(handle, r.config);
  } finally {
    await handle.close();
  }
}

/** `ai-farm config`, `ai-farm db migrate` and `ai-farm tokens ...`: server-side administration. */
export function adminCommands(program: Command, setExit: SetExit): void {
  addConfigOptions(
    program.command('config').description('print the effective configuration, secrets masked'),
  ).action((flags: ConfigFlags) => {
    const r = configFromFlags(flags, process.env);
    if (!r.ok) return setExit(reportConfigErrors(r.errors));
    console.log(JSON.stringify(maskedConfig(r.config), null, 2));
  });

  const db = program.command('db').description('database maintenance');
  addConfigOptions(
    db.command('migrate').description('create the database if missing and apply migrations'),
  ).action(async (flags: ConfigFlags) => {
    const r = configFromFlags(flags, process.env);
    if (!r.ok) return setExit(reportConfigErrors(r.errors));
    const handle = await openDatabase(resolveDatabaseTarget(r.config));
    try {
      const applied = await migrateToLatest(handle.db, handle.dialect);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      console.log(`database: ${handle.describe}`);
    } finally {
      await handle.close();
    }
  });

  const tokens = program.command('tokens').description('API tokens (run on the server machine)');
  addConfigOptions(
    tokens
      .command('create')
      .description('create a token; its secret is printed once')
      .requiredOption('-n, --name <name>', 'name of the token (its principal)')
      .option('-r, --role <role>', `one of ${ROLES.join(', ')}`, 'user')
      .option('--json', 'print JSON'),
  ).action(async (flags: ConfigFlags & { name: string; role: string; json?: boolean }) => {
    if (!(ROLES as readonly string[]).includes(flags.role)) {
      console.error(`--role must be one of ${ROLES.join(', ')}`);
      return setExit(2);
    }
    await withDatabase(flags, setExit, async (h) => {
      const svc = new TokenService(h.db, systemClock);
      const { token, view } = await svc.create(flags.name, flags.role as Role, 'cli');
      if (flags.json) console.log(JSON.stringify({ ...view, token }, null, 2));
      else console.log(`created ${view.role} token ${view.id} (${view.name}); shown this once:\n${token}`);
    });
  });
  addConfigOptions(
    tokens
      .command('list')
      .description('list tokens')
      .option('-a, --all', 'include revoked')
      .option('--json', 'JSON'),
  ).action(async (flags: ConfigFlags & { all?: boolean; json?: boolean }) => {
    await withDatabase(flags, setExit, async (h) => {
      const list = await new TokenService(h.db, systemClock).list(flags.all ?? false);
      if (flags.json) return void console.log(JSON.stringify(list, null, 2));
      console.table(
        list.map((t) => ({
          id: t.id,
          name: t.name,
          role: t.role,
          created: t.created_at,
          revoked: t.revoked_at ?? '',
        })),
      );
    });
  });
  addConfigOptions(tokens.command('revoke').description('revoke a token').argument('<id>')).action(
    async (id: string, flags: ConfigFlags) => {
      await withDatabase(flags, setExit, async (h, c) => {
        // With Redis, the servers' cached copy is dropped too and they are told on the bus:
        // refused at once everywhere, its open sockets closed.
        const t = await withSharedTokenCache(c, silentLogger(), (cache, bus) =>
          new TokenService(h.db, systemClock, cache, bus).revoke(id, 'cli'),
        );
        console.log(`revoked ${t.id} (${t.name})`);
      });
    },
  );
}
