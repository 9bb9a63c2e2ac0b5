import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';

/** Flags every server-side command takes to find its configuration. */
export interface ConfigFlags {
  config?: string;
  set?: string[];
  port?: string;
  host?: string;
  databaseUrl?: string;
  dataDir?: string;
}

export function addConfigOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'JSON config file (same keys as the environment; also AI_FARM_CONFIG)')
    .option('-s, --set <KEY=VALUE...>', 'set any config key, e.g. --set MAX_CLIENTS=200')
    .option('-p, --port <port>', 'SERVER_PORT')
    .option('--host <host>', 'SERVER_HOST')
    .option('--database-url <url>', 'DATABASE_URL (mysql://user:pass@host:port/db or a SQLite file)')
    .option('--data-dir <dir>', 'DATA_DIR');
}

/** The effective configuration, or the list of problems (the caller exits with code 2). */
export function configFromFlags(
  flags: ConfigFlags,
  env: Record<string, string | undefined>,
): { ok: true; config: Config } | { ok: false; errors: string[] } {
  const values: Record<string, unknown> = {};
  const errors: string[] = [];
  for (const pair of flags.set ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) errors.push(`--set ${pair}: expected KEY=VALUE`);
    else values[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (flags.port !== undefined) values.SERVER_PORT = flags.port;
  if (flags.host !== undefined) values.SERVER_HOST = flags.host;
  if (flags.databaseUrl !== undefined) values.DATABASE_URL = flags.databaseUrl;
  if (flags.dataDir !== undefined) values.DATA_DIR = flags.dataDir;
  const r = loadConfig({ file: flags.config, env, flags: values });
  if (!r.ok) return { ok: false, errors: [...errors, ...r.errors] };
  if (errors.length) return { ok: false, errors };
  return r;
}

/** Prints configuration problems the way every command does. */
export function reportConfigErrors(errors: string[]): number {
  console.error('Invalid configuration:');
  for (const e of errors) console.error(`  - ${e}`);
  return 2;
}
