import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, maskedConfig } from './load.js';

describe('loadConfig', () => {
  it('gives the seed defaults', () => {
    const r = loadConfig({ env: {} });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config).toMatchObject({
      SERVER_HOST: '0.0.0.0',
      SERVER_PORT: 8000,
      WEBSOCKET_PORT: 8765,
      MODEL_SERVER_PORT: 5000,
      MAX_CLIENTS: 100,
      MAX_TASKS_PER_CLIENT: 3,
      CONNECTION_TIMEOUT: 60,
      DEFAULT_BATCH_SIZE: 32,
      DEFAULT_EPOCHS: 10,
      CHECKPOINT_FREQUENCY: 5,
      LOG_DIR: 'logs',
      CHECKPOINT_DIR: 'checkpoints',
      MODEL_CACHE_DIR: 'model_cache',
      db_config: null,
      DATA_DIR: './data',
      RATE_LIMIT: '60/minute',
      ALLOW_ANONYMOUS_CLIENTS: false,
    });
  });

  it('layers file < env < flags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'c.json');
    writeFileSync(
      file,
      JSON.stringify({
        SERVER_PORT: 1,
        MAX_CLIENTS: 5,
        LOG_DIR: 'fromfile',
        db_config: { host: 'h', database: 'd' },
      }),
    );
    const r = loadConfig({ file, env: { SERVER_PORT: '2', MAX_CLIENTS: '6' }, flags: { SERVER_PORT: '3' } });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.SERVER_PORT).toBe(3);
    expect(r.config.MAX_CLIENTS).toBe(6);
    expect(r.config.LOG_DIR).toBe('fromfile');
    expect(r.config.db_config).toMatchObject({ host: 'h', database: 'd', user: 'root', password: '' });
  });

  it('reads AI_FARM_CONFIG and db_config from the environment as JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ DEFAULT_EPOCHS: 7 }));
    const r = loadConfig({
      env: { AI_FARM_CONFIG: file, db_config: '{"host":"db","database":"x","password":"p"}' },
    });
    expect(r.ok && r.config.DEFAULT_EPOCHS).toBe(7);
    expect(r.ok && r.config.db_config?.host).toBe('db');
  });

  it('reports every problem at once, naming the key', () => {
    const r = loadConfig({
      env: { SERVER_PORT: 'abc', RATE_LIMIT: '60 per minute', MAX_CLIENTS: '0', db_config: '{bad' },
      flags: { NOPE: 1 },
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const text = r.errors.join('\n');
    expect(text).toMatch(/SERVER_PORT/);
    expect(text).toMatch(/RATE_LIMIT/);
    expect(text).toMatch(/MAX_CLIENTS/);
    expect(text).toMatch(/db_config/);
    expect(text).toMatch(/unknown key NOPE/);
  });

  it('rejects unknown keys and bad JSON in the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ SERVER_PROT: 1 }));
    const r = loadConfig({ file });
    expect(!r.ok && r.errors.join()).toMatch(/unknown key SERVER_PROT/);
    writeFileSync(file, '{');
    const r2 = loadConfig({ file });
    expect(!r2.ok && r2.errors.join()).toMatch(/c\.json/);
  });

  it('masks secrets', () => {
    const r = loadConfig({
      env: {
        ADMIN_TOKEN: 'afm_secretsecretsecretsecret',
        DATABASE_URL: 'mysql://root:secret@h:3306/db',
        db_config: '{"password":"pw"}',
      },
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const text = JSON.stringify(maskedConfig(r.config));
    expect(text).not.toMatch(/afm_secret|secret@|pw/);
    expect(text).toMatch(/mysql:\/\/root:\*+@h:3306\/db/);
  });

  it('refuses an ADMIN_TOKEN that could never authenticate, without echoing it', () => {
    const r = loadConfig({ env: { ADMIN_TOKEN: 'hunter2' } });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.join()).toMatch(/ADMIN_TOKEN/);
    expect(r.errors.join()).not.toMatch(/hunter2/);
  });
});
