import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, ConfigSchema } from '../src/config/schema.js';

const ROOT = join(import.meta.dirname, '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

describe('docs/configuration.md', () => {
  const doc = read('docs/configuration.md');
  /** Rows of the keys table: | `KEY` | type | default | meaning |. */
  const rows = new Map(
    [...doc.matchAll(/^\| `([A-Za-z_]+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$/gm)].map((m) => [
      m[1] as string,
      { type: (m[2] as string).trim(), default: (m[3] as string).trim(), meaning: (m[4] as string).trim() },
    ]),
  );

  it('documents every key of the config schema, and no other', () => {
    expect([...rows.keys()].sort()).toEqual([...CONFIG_KEYS].sort());
  });

  it.each(CONFIG_KEYS)('gives %s its real default and a meaning', (key) => {
    const row = rows.get(key);
    expect(row).toBeDefined();
    const def: unknown = (ConfigSchema.properties[key] as { default?: unknown }).default;
    const shown = row?.default.replace(/`/g, '');
    expect(shown).toBe(def === '' ? '(empty)' : String(def));
    expect(row?.meaning.length).toBeGreaterThan(10);
  });

  it('explains the precedence, the file format with db_config, and MySQL', () => {
    expect(doc).toMatch(/Later sources win/);
    expect(doc).toMatch(/"db_config": \{/);
    expect(doc).toMatch(/AI_FARM_CONFIG/);
    expect(doc).toMatch(/### MySQL or MariaDB/);
    expect(doc).toMatch(/DATABASE_URL='mysql:\/\//);
  });
});

describe('docs/architecture.md', () => {
  const doc = read('docs/architecture.md');
  const pkg = JSON.parse(read('package.json')) as {
    dependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };

  it.each([...Object.keys(pkg.dependencies), ...Object.keys(pkg.devDependencies)])(
    'says why %s is a dependency',
    (name) => {
      expect(doc).toContain(`**${name}**`);
    },
  );

  it('shows the layout and the request flow', () => {
    expect(doc).toMatch(/## Layout/);
    expect(doc).toMatch(/route handler[\s\S]*service[\s\S]*repository/);
  });
});

describe('CHANGELOG.md', () => {
  it('has an Unreleased section at the top', () => {
    const log = read('CHANGELOG.md');
    expect(log.indexOf('## [Unreleased]')).toBe(log.indexOf('## '));
  });
});
