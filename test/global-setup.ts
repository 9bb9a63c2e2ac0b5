import { createConnection } from 'mysql2/promise';
import { TEST_MYSQL_URL } from './helpers/db.js';

/**
 * Storage tests run on SQLite and on MariaDB; fail early and clearly when MariaDB is not
 * there (`.ci/run` starts it through scripts/ensure-services.sh).
 */
export default async function setup(): Promise<void> {
  try {
    const conn = await createConnection({ uri: TEST_MYSQL_URL, connectTimeout: 5000 });
    await conn.query('select 1');
    await conn.end();
  } catch (err) {
    throw new Error(
      `MariaDB is not reachable at ${TEST_MYSQL_URL} (${(err as Error).message}). ` +
        'Run scripts/ensure-services.sh, or set AI_FARM_TEST_MYSQL_URL.',
    );
  }
}
