import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db.js';

/**
 * Asynchronous training (config.mode "async", docs/training.md): an update's `round` is the
 * round it started in (its upload URL's), and `buffer_round` the round whose buffer it was
 * folded into (the round open when it was accepted). In sync mode both are the same round, as
 * they are for every update journaled before this migration.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const type = dialect === 'mysql' ? 'INT' : 'INTEGER';
  await sql.raw(`ALTER TABLE round_updates ADD COLUMN buffer_round ${type} NULL`).execute(db);
  await sql.raw(`UPDATE round_updates SET buffer_round = round`).execute(db);
  await sql.raw(`CREATE INDEX idx_round_updates_buffer ON round_updates (task_id, buffer_round)`).execute(db);
}
