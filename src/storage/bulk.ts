import { CompiledQuery, MysqlAdapter, sql, type RawBuilder } from 'kysely';
import type { Executor } from './executor.js';
import type { DialectAdapter } from 'kysely';
import type { Database } from './schema.js';

type Db = Executor;

/** Rows per multi-row statement: well under SQLite's 32,766 parameters and MySQL's packet size. */
export const ROWS_PER_STATEMENT = 500;

export function isMysql(db: Db): boolean {
  return db.getExecutor().adapter instanceof MysqlAdapter;
}

const consecutiveCache = new WeakMap<DialectAdapter, Promise<boolean>>();

/**
 * Whether one multi-row INSERT gets consecutive auto-increment ids, so its ids follow from
 * the insert id alone. Always on SQLite (one writer; AUTOINCREMENT takes max + 1 per row).
 * On MySQL/MariaDB only with innodb_autoinc_lock_mode 0 or 1 (MariaDB's default; MySQL 8
 * defaults to 2, "interleaved", where a statement's ids may have gaps).
 */
export function consecutiveIds(db: Db): Promise<boolean> {
  if (!isMysql(db)) return Promise.resolve(true);
  const adapter = db.getExecutor().adapter;
  let known = consecutiveCache.get(adapter);
  if (!known) {
    known = sql<{ m: number | string }>`select @@innodb_autoinc_lock_mode as m`
      .execute(db)
      .then((r) => Number(r.rows[0]?.m ?? 2) <= 1)
      .catch(() => false);
    consecutiveCache.set(adapter, known);
  }
  return known;
}

/**
 * The ids of the rows inserted by the statements of one `insertRows` (consecutive ids only, see
 * `consecutiveIds`), in order: SQLite reports each statement's last row's id, MySQL its first's.
 */
export function idsOfInserts(
  db: Db,
  statements: readonly { n: number; insertId: bigint | undefined }[],
): number[] {
  const mysql = isMysql(db);
  return statements.flatMap(({ n, insertId }) => {
    if (insertId === undefined) throw new Error('multi-row insert returned no id');
    const first = mysql ? Number(insertId) : Number(insertId) - n + 1;
    return Array.from({ length: n }, (_, i) => first + i);
  });
}

/**
 * `CASE id WHEN ... THEN ... END` for a value that differs per row of a set-based UPDATE,
 * or the plain value when every row gets the same one. Rows missing from `values` keep
 * `fallback` (a column reference, so `ELSE column` leaves them unchanged).
 */
export function perRow<V extends string | number | null>(
  values: ReadonlyMap<number, V>,
  fallback?: RawBuilder<unknown>,
): RawBuilder<V> | V {
  const distinct = new Set(values.values());
  if (distinct.size === 1 && !fallback) return distinct.values().next().value as V;
  const whens = [...values].map(([id, v]) => sql`when ${id} then ${v}`);
  return sql<V>`case id ${sql.join(whens, sql` `)} else ${fallback ?? sql`null`} end`;
}

/** Splits `items` into runs of at most `size`. */
export function chunks<T>(items: readonly T[], size = ROWS_PER_STATEMENT): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Rows per SQLite statement: `n` rows go as the binary digits of n (300 = 256 + 32 + 8 + 4),
 * so a few statement texts cover every batch size and all of them stay prepared.
 */
const SQLITE_PIECES = [256, 128, 64, 32, 16, 8, 4, 2, 1];

const insertTexts = new Map<string, string>();

/** `INSERT INTO table (columns) VALUES (?, ...), ...` for `n` rows, made once per shape. */
function insertText(mysql: boolean, table: string, columns: readonly string[], n: number): string {
  const key = `${mysql ? 'm' : 's'}|${table}|${columns.join(',')}|${n}`;
  let text = insertTexts.get(key);
  if (!text) {
    const q = (name: string) => (mysql ? `\`${name}\`` : `"${name}"`);
    const row = `(${columns.map(() => '?').join(', ')})`;
    text = `insert into ${q(table)} (${columns.map(q).join(', ')}) values ${Array(n).fill(row).join(', ')}`;
    insertTexts.set(key, text);
  }
  return text;
}

/**
 * Inserts rows (each the values of `columns`, in order) with multi-row INSERTs whose text is
 * built once per shape rather than by the query builder per call: on the hot paths (a task's
 * events, assignments and creation) building the statement cost as much as running it.
 * Returns each statement's row count and insert id, in order, for `idsOfInserts`.
 */
export async function insertRows(
  db: Db,
  table: keyof Database & string,
  columns: readonly string[],
  rows: readonly (readonly unknown[])[],
): Promise<{ n: number; insertId: bigint | undefined }[]> {
  const mysql = isMysql(db);
  const out: { n: number; insertId: bigint | undefined }[] = [];
  let at = 0;
  while (at < rows.length) {
    const left = rows.length - at;
    const n = mysql ? Math.min(left, ROWS_PER_STATEMENT) : (SQLITE_PIECES.find((p) => p <= left) as number);
    const params: unknown[] = [];
    for (let i = at; i < at + n; i++) for (const v of rows[i] as readonly unknown[]) params.push(v);
    const res = await db.executeQuery(CompiledQuery.raw(insertText(mysql, table, columns, n), params));
    out.push({ n, insertId: res.insertId });
    at += n;
  }
  return out;
}
