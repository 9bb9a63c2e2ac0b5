import { readFileSync } from 'node:fs';
import { Value, type ValueError } from '@sinclair/typebox/value';
import { CONFIG_KEYS, ConfigSchema, DbConfigSchema, SECRET_KEYS, type Config } from './schema.js';

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: string[] };

/** Where configuration values come from, later wins: defaults < file < env < flags. */
export interface ConfigSources {
  /** Path of a JSON config file (`--config FILE` or AI_FARM_CONFIG). */
  file?: string | undefined;
  /** The process environment; only variables named like config keys are read. */
  env?: Record<string, string | undefined>;
  /** Values from command-line flags, as strings or already typed. */
  flags?: Record<string, unknown>;
}

const KEY_SET = new Set<string>(CONFIG_KEYS);

/**
 * Builds the configuration from its sources and validates it, reporting every problem
 * at once. Never throws and never exits: the caller decides.
 */
export function loadConfig(sources: ConfigSources): ConfigResult {
  const errors: string[] = [];
  const raw: Record<string, unknown> = {};
  const env = sources.env ?? {};
  const file = sources.file ?? env.AI_FARM_CONFIG;

  if (file) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
        errors.push(`config file ${file}: expected a JSON object`);
      } else {
        for (const [k, v] of Object.entries(parsed)) {
          if (KEY_SET.has(k)) raw[k] = v;
          else errors.push(`config file ${file}: unknown key ${k}`);
        }
      }
    } catch (err) {
      errors.push(`config file ${file}: ${(err as Error).message}`);
    }
  }
  for (const key of CONFIG_KEYS) {
    const v = env[key];
    if (v !== undefined) raw[key] = parseEnvValue(key, v, errors, 'environment variable');
  }
  for (const [k, v] of Object.entries(sources.flags ?? {})) {
    if (v === undefined) continue;
    if (!KEY_SET.has(k)) {
      errors.push(`flag: unknown key ${k}`);
      continue;
    }
    raw[k] = typeof v === 'string' ? parseEnvValue(k, v, errors, 'flag') : v;
  }

  const value = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, raw)) as Record<string, unknown>;
  for (const e of Value.Errors(ConfigSchema, value)) {
    // db_config is "object or null": the union's own message ("Expected union value")
    // would hide which field is wrong, so name the fields of the object instead.
    if (e.path === '/db_config' && value.db_config && typeof value.db_config === 'object') {
      for (const inner of Value.Errors(DbConfigSchema, value.db_config))
        errors.push(describe(inner, 'db_config'));
      continue;
    }
    errors.push(describe(e));
  }
  if (errors.length > 0) return { ok: false, errors: dedupe(errors) };
  return { ok: true, config: value as Config };
}

/** "db_config.port: Expected integer (got "x")": the key, what was expected, what was given. */
function describe(e: ValueError, prefix = ''): string {
  const path = e.path.replace(/^\//, '').replace(/\//g, '.');
  const key = [prefix, path].filter(Boolean).join('.') || '(root)';
  // A union of literals (LOG_LEVEL) says "Expected union value"; name the values instead.
  const choices = (e.schema.anyOf as { const?: unknown }[] | undefined)?.map((s) => s.const);
  const message =
    choices && choices.every((c) => c !== undefined) ? `Expected one of ${choices.join(', ')}` : e.message;
  // Never echo a secret back, not even a wrong one.
  const got = SECRET_KEYS.has(key) ? 'value hidden' : `got ${JSON.stringify(e.value)}`;
  return `${key}: ${message} (${got})`;
}

function parseEnvValue(key: string, v: string, errors: string[], source: string): unknown {
  // TypeBox would turn "4e9" or "8000.5" into 4 or 8000 for an integer key: refuse them.
  if (ConfigSchema.properties[key as keyof Config]?.type === 'integer' && !/^\s*[+-]?\d+\s*$/.test(v)) {
    errors.push(`${key}: Expected integer (got ${JSON.stringify(v)})`);
    return undefined;
  }
  if (key !== 'db_config') return v;
  if (v === '') return null;
  try {
    return JSON.parse(v);
  } catch {
    errors.push(`db_config: ${source} must be a JSON object`);
    return undefined;
  }
}

function dedupe(list: string[]): string[] {
  return [...new Set(list)];
}

/** The configuration with secrets masked, for `ai-farm config` and logs. */
export function maskedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const v = config[key];
    if (SECRET_KEYS.has(key)) out[key] = v ? '********' : '';
    else if (key === 'db_config' && v && typeof v === 'object') out[key] = { ...v, password: '********' };
    else if ((key === 'DATABASE_URL' || key === 'REDIS_URL') && typeof v === 'string') out[key] = maskUrl(v);
    else out[key] = v;
  }
  return out;
}

/** Hides the password of a URL such as mysql://user:pass@host/db. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@]*@/i, '$1********@');
}
