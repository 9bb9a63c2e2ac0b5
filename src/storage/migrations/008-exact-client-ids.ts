import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db.js';

/**
 * Client ids compare exactly on both dialects: byte for byte, case and trailing spaces
 * included. SQLite's default comparison already is; MySQL's utf8mb4_general_ci made `case-x`,
 * `CASE-X` and `case-x ` one row (docs/workers.md, "Client ids"). Every column holding a client
 * id gets a binary collation that does not pad: MariaDB's utf8mb4_nopad_bin, MySQL 8's
 * utf8mb4_0900_bin. Ids already stored stay as they are (unique under the old rule, they are
 * unique under the new one).
 */
const COLUMNS: [table: string, column: string, nullable: boolean][] = [
  ['clients', 'id', false],
  ['tasks', 'client_id', true],
  ['task_assignments', 'client_id', false],
  ['round_updates', 'client_id', false],
];

export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  if (dialect !== 'mysql') return;
  const found = await sql<{ name: string }>`
    SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS
    WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')`.execute(db);
  const names = found.rows.map((r) => r.name);
  const collation = names.includes('utf8mb4_nopad_bin') ? 'utf8mb4_nopad_bin' : names[0];
  if (!collation)
    throw new Error('the database has no binary no-pad utf8mb4 collation (MariaDB 10.2+ or MySQL 8 needed)');
  for (const [table, column, nullable] of COLUMNS) {
    await sql
      .raw(
        `ALTER TABLE ${table} MODIFY ${column} VARCHAR(255) CHARACTER SET utf8mb4 COLLATE ${collation} ${nullable ? 'NULL' : 'NOT NULL'}`,
      )
      .execute(db);
  }
}
