import { createConnection, type Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_MYSQL_URL } from '../../test/helpers/db.js';
import { startTestServer, type TestServer } from '../../test/helpers/server.js';

/**
 * The seed's three tables, column by column, as the seed wrote them (MySQL). AI Farm may
 * append columns and enum values; it may not change or drop what the seed has.
 */
const SEED: Record<string, Record<string, string>> = {
  tasks: {
    id: 'INT NOT NULL',
    type: 'VARCHAR(255) NOT NULL',
    requirements: 'JSON NOT NULL',
    status: "ENUM('pending','running','completed','failed','error') NOT NULL",
    client_id: 'VARCHAR(255)',
    created_at: 'DATETIME NOT NULL',
    updated_at: 'DATETIME NOT NULL',
    result: 'JSON',
    error_log: 'TEXT',
    priority: 'INT DEFAULT 0',
    config: 'JSON',
    checkpoint_path: 'VARCHAR(255)',
  },
  task_assignments: {
    id: 'INT NOT NULL',
    task_id: 'INT NOT NULL',
    client_id: 'VARCHAR(255) NOT NULL',
    assigned_at: 'DATETIME NOT NULL',
    status: "ENUM('assigned','training','completed','failed') NOT NULL",
    rank: 'INT NOT NULL',
    checkpoint_path: 'VARCHAR(255)',
  },
  clients: {
    id: 'VARCHAR(255) NOT NULL',
    cpu_info: 'JSON NOT NULL',
    ram_info: 'JSON NOT NULL',
    gpu_info: 'JSON',
    session_info: 'JSON',
    last_seen: 'DATETIME NOT NULL',
    status: "ENUM('active','inactive') NOT NULL",
  },
};

interface ColumnInfo {
  TABLE_NAME: string;
  COLUMN_NAME: string;
  DATA_TYPE: string;
  COLUMN_TYPE: string;
  IS_NULLABLE: 'YES' | 'NO';
  COLUMN_DEFAULT: string | null;
  COLUMN_KEY: string;
  EXTRA: string;
  CHARACTER_SET_NAME: string | null;
}

/** A column definition as the seed wrote it ("INT NOT NULL DEFAULT 0") as type, nullable and default. */
function columnSpec(def: string): { type: string; nullable: boolean; default?: string } {
  const fallback = / DEFAULT (\S+)/.exec(def)?.[1];
  const type = def.replace(/ NOT NULL| DEFAULT \S+/g, '');
  return {
    type,
    nullable: !def.includes(' NOT NULL'),
    ...(fallback === undefined ? {} : { default: fallback }),
  };
}

/** 'enum('a','b')' -> ['a', 'b']. */
const enumValues = (columnType: string): string[] =>
  [...columnType.matchAll(/'((?:[^']|'')*)'/g)].map((m) => (m[1] ?? '').replace(/''/g, "'"));

describe('MariaDB schema (seed compatibility)', () => {
  let t: TestServer;
  let root: Connection;
  let dbName: string;
  let columns: ColumnInfo[];
  let jsonChecks: Set<string>;

  beforeAll(async () => {
    // The database does not exist yet: starting the server creates it.
    t = await startTestServer('mysql');
    dbName = decodeURIComponent(new URL(t.db.url).pathname.slice(1));
    root = await createConnection(TEST_MYSQL_URL);
    const [cols] = await root.query(
      `SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT,
              COLUMN_KEY, EXTRA, CHARACTER_SET_NAME
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ?`,
      [dbName],
    );
    columns = cols as ColumnInfo[];
    // MariaDB stores JSON as LONGTEXT with a json_valid() check; MySQL 8 has a real JSON type.
    const [checks] = await root.query(
      `SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?`,
      [dbName],
    );
    jsonChecks = new Set(
      (checks as { TABLE_NAME: string; CHECK_CLAUSE: string }[]).flatMap((c) => {
        const m = /json_valid\(`([^`]+)`\)/i.exec(c.CHECK_CLAUSE);
        return m ? [`${c.TABLE_NAME}.${m[1]}`] : [];
      }),
    );
  });
  afterAll(async () => {
    await root?.end();
    await t?.stop();
  });

  const column = (table: string, name: string): ColumnInfo => {
    const c = columns.find((x) => x.TABLE_NAME === table && x.COLUMN_NAME === name);
    if (!c) throw new Error(`${table}.${name} is missing`);
    return c;
  };

  it('created the missing database in utf8mb4', async () => {
    const [rows] = await root.query(
      'SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [dbName],
    );
    expect(rows).toEqual([{ cs: 'utf8mb4', co: 'utf8mb4_general_ci' }]);
  });

  const cases = Object.entries(SEED).flatMap(([table, cols]) =>
    Object.entries(cols).map(([name, def]) => [table, name, columnSpec(def)] as const),
  );
  it.each(cases)('%s.%s has the seed type', (table, name, spec) => {
    const c = column(table, name);
    const want = spec.type;
    if (want === 'JSON') {
      const isJson =
        c.DATA_TYPE === 'json' || (c.DATA_TYPE === 'longtext' && jsonChecks.has(`${table}.${name}`));
      expect(isJson, `${c.DATA_TYPE} ${c.COLUMN_TYPE}`).toBe(true);
    } else if (want === 'INT') {
      expect(c.DATA_TYPE).toBe('int');
      expect(c.COLUMN_TYPE).toMatch(/^int(\(11\))?$/);
    } else if (want.startsWith('ENUM')) {
      expect(c.DATA_TYPE).toBe('enum');
      const seedValues = enumValues(want);
      // The seed's values come first, in the seed's order; AI Farm's additions follow.
      expect(enumValues(c.COLUMN_TYPE).slice(0, seedValues.length)).toEqual(seedValues);
    } else {
      expect(c.COLUMN_TYPE.toUpperCase()).toBe(want);
    }
    expect(c.IS_NULLABLE).toBe(spec.nullable ? 'YES' : 'NO');
    if (spec.default !== undefined) expect(c.COLUMN_DEFAULT).toBe(spec.default);
    if (c.CHARACTER_SET_NAME !== null) expect(c.CHARACTER_SET_NAME).toBe('utf8mb4');
  });

  it('keeps the seed keys: auto-increment ids, primary keys, the cascading foreign key', async () => {
    for (const table of ['tasks', 'task_assignments']) {
      expect(column(table, 'id').EXTRA).toMatch(/auto_increment/);
      expect(column(table, 'id').COLUMN_KEY).toBe('PRI');
    }
    expect(column('clients', 'id').COLUMN_KEY).toBe('PRI');
    const [fks] = await root.query(
      `SELECT r.TABLE_NAME, r.REFERENCED_TABLE_NAME, r.DELETE_RULE, k.COLUMN_NAME
         FROM information_schema.REFERENTIAL_CONSTRAINTS r
         JOIN information_schema.KEY_COLUMN_USAGE k
           ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME
        WHERE r.CONSTRAINT_SCHEMA = ? AND r.TABLE_NAME = 'task_assignments'`,
      [dbName],
    );
    expect(fks).toContainEqual({
      TABLE_NAME: 'task_assignments',
      REFERENCED_TABLE_NAME: 'tasks',
      DELETE_RULE: 'CASCADE',
      COLUMN_NAME: 'task_id',
    });
  });

  it('stores every table in utf8mb4 with InnoDB (transactions, foreign keys)', async () => {
    const [tables] = await root.query(
      'SELECT TABLE_NAME, TABLE_COLLATION, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
      [dbName],
    );
    const list = tables as { TABLE_NAME: string; TABLE_COLLATION: string; ENGINE: string }[];
    expect(list.map((x) => x.TABLE_NAME)).toEqual(expect.arrayContaining(Object.keys(SEED)));
    for (const x of list) {
      expect(x.TABLE_COLLATION, x.TABLE_NAME).toMatch(/^utf8mb4_/);
      expect(x.ENGINE, x.TABLE_NAME).toBe('InnoDB');
    }
  });

  it('round-trips four-byte characters through the API', async () => {
    const name = 'emoji 🚀 and 训练';
    const created = await t.api('POST', '/api/tasks', {
      type: 'utf8',
      name,
      requirements: {},
      config: { note: '🧠' },
    });
    expect(created.status).toBe(201);
    const got = await t.api('GET', `/api/tasks/${created.body.id}`);
    expect(got.body).toMatchObject({ name, config: { note: '🧠' } });
  });
});
