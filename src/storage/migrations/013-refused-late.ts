import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db.js';

/**
 * Over-selection (config.over_select, docs/training.md): a sync round closes on its first K
 * updates and refuses the later ones; `refused_late` counts those refusals (incremented in
 * place, whichever instance refused, before or after the round's close committed).
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const type = dialect === 'mysql' ? 'INT' : 'INTEGER';
  await sql.raw(`ALTER TABLE training_rounds ADD COLUMN refused_late ${type} NOT NULL DEFAULT 0`).execute(db);
}
