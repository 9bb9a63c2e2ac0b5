import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';

/** Validation messages name the key, say what was expected and what was given. */
describe('configuration validation', () => {
  const errorsOf = (env: Record<string, string>) => {
    const r = loadConfig({ env });
    return r.ok ? [] : r.errors;
  };

  it.each([
    ['MAX_UPLOAD_BYTES', '4e9'],
    ['SERVER_PORT', '8000.5'],
    ['MAX_CLIENTS', '0x10'],
    ['DEFAULT_EPOCHS', '1_000'],
  ])('refuses %s=%s instead of truncating it', (key, value) => {
    expect(errorsOf({ [key]: value })).toEqual([`${key}: Expected integer (got ${JSON.stringify(value)})`]);
  });

  it('accepts plain integers, with spaces around them', () => {
    const r = loadConfig({ env: { SERVER_PORT: ' 8001 ', MAX_CLIENTS: '+7' } });
    expect(r.ok && [r.config.SERVER_PORT, r.config.MAX_CLIENTS]).toEqual([8001, 7]);
  });

  it('accepts fractions for number keys', () => {
    const r = loadConfig({ env: { CONNECTION_TIMEOUT: '0.5', DB_QUERY_TIMEOUT: '1e1' } });
    expect(r.ok && [r.config.CONNECTION_TIMEOUT, r.config.DB_QUERY_TIMEOUT]).toEqual([0.5, 10]);
  });

  it('lists the allowed values of LOG_LEVEL', () => {
    expect(errorsOf({ LOG_LEVEL: 'verbose' })).toEqual([
      'LOG_LEVEL: Expected one of fatal, error, warn, info, debug, trace (got "verbose")',
    ]);
  });

  it('names the field of db_config that is wrong', () => {
    const errors = errorsOf({ db_config: '{"host": 5, "port": "x", "pasword": "p"}' });
    expect(errors.join('\n')).toMatch(/^db_config\.host: Expected string/m);
    expect(errors.join('\n')).toMatch(/^db_config\.port: Expected integer/m);
    expect(errors.join('\n')).toMatch(/^db_config\.pasword: Unexpected property/m);
  });

  it('accepts the seed db_config shape', () => {
    const r = loadConfig({
      env: {
        db_config: JSON.stringify({
          host: 'localhost',
          user: 'root',
          password: '',
          database: 'ai_farm',
          charset: 'utf8mb4',
          collation: 'utf8mb4_general_ci',
        }),
      },
    });
    expect(r.ok).toBe(true);
  });

  it('knows RATE_LIMIT forms', () => {
    for (const ok of ['off', '1/second', '60/minute', '1000/hour', '5/day'])
      expect(errorsOf({ RATE_LIMIT: ok })).toEqual([]);
    for (const bad of ['0/minute', '60 per minute', '60/min', 'on', ''])
      expect(errorsOf({ RATE_LIMIT: bad })[0]).toMatch(/^RATE_LIMIT: /);
  });
});
