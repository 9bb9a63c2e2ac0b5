import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, resolveDatabaseTarget } from '../src/storage/db.js';
import { migrateToLatest } from '../src/storage/migrate.js';
import { toDbTime } from '../src/storage/values.js';
import { createTestDatabase, DIALECTS } from './helpers/db.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/**
 * Ownership follows the token, not its name (issue 11, point 10): a task belongs to the
 * identity that created it; a token given the same name sees none of it, and the names
 * people read as "the administrator" cannot be given to a token.
 */
describe.each(DIALECTS)('task ownership on %s', (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(dialect);
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  });

  const userToken = async (name: string) => {
    const r = await t.api('POST', '/api/tokens', { name, role: 'user' });
    expect(r.status).toBe(201);
    return r.body.token as string;
  };
  const createTask = async (token: string) => {
    const r = await t.api('POST', '/api/tasks', { type: 'cpu', requirements: {}, config: {} }, token);
    expect(r.status).toBe(201);
    return r.body.id as number;
  };

  it('refuses reserved token names, in any case', async () => {
    for (const name of ['bootstrap-admin', 'admin', 'Admin', 'ROOT', 'system']) {
      for (const role of ['user', 'admin']) {
        const r = await t.api('POST', '/api/tokens', { name, role });
        expect(r.status).toBe(400);
        expect(r.body.error.code).toBe('reserved_name');
        expect(r.body.error.details.fields).toEqual(['body/name']);
      }
    }
  });

  it('a token named like another sees none of its tasks; each sees its own; an admin sees all', async () => {
    const adminTask = await createTask(t.adminToken);
    const first = await userToken('alice');
    const second = await userToken('alice');
    const firstTask = await createTask(first);
    const secondTask = await createTask(second);

    for (const [token, own, others] of [
      [first, firstTask, [secondTask, adminTask]],
      [second, secondTask, [firstTask, adminTask]],
    ] as const) {
      const list = await t.api('GET', '/api/tasks', undefined, token);
      expect(list.body.items.map((x: { id: number }) => x.id)).toEqual([own]);
      expect(list.body.total).toBe(1);
      expect((await t.api('GET', `/api/tasks/${own}`, undefined, token)).body.created_by).toBe('alice');
      for (const id of others) {
        expect((await t.api('GET', `/api/tasks/${id}`, undefined, token)).status).toBe(404);
        expect((await t.api('DELETE', `/api/tasks/${id}`, undefined, token)).status).toBe(404);
      }
    }
    const all = await t.api('GET', '/api/tasks?limit=500');
    const ids = all.body.items.map((x: { id: number }) => x.id);
    for (const id of [adminTask, firstTask, secondTask]) expect(ids).toContain(id);
  });
});

describe.each(DIALECTS)('migration 007 on %s', (dialect) => {
  it('gives older tasks the token whose name they carry only when exactly one token has it', async () => {
    const tdb = await createTestDatabase(dialect);
    const h = await openDatabase(
      resolveDatabaseTarget({ DATABASE_URL: tdb.url, db_config: null, DATA_DIR: tdb.dir }),
    );
    try {
      await migrateToLatest(h.db, h.dialect, '006-instances');
      const now = toDbTime(new Date(), true);
      const token = (id: string, name: string) =>
        h.db
          .insertInto('api_tokens')
          .values({
            id,
            name,
            role: 'user',
            token_hash: id.padEnd(64, '0'),
            created_at: now,
            created_by: 'test',
          })
          .execute();
      await token('tok_unique', 'carol');
      await token('tok_twin1', 'twins');
      await token('tok_twin2', 'twins');
      await h.db
        .insertInto('users')
        .values({ username: 'dora', password_hash: 'x', role: 'admin', created_at: now, updated_at: now })
        .execute();
      await token('tok_dora', 'dora');
      // Rows as version 006 wrote them: no owner column yet.
      const task = async (createdBy: string) => {
        const at = toDbTime(new Date());
        await h.db
          .insertInto('tasks')
          .values({
            type: 'cpu',
            requirements: '{}',
            status: 'pending',
            created_by: createdBy,
            created_at: at,
            updated_at: at,
          } as never)
          .execute();
        const row = await h.db
          .selectFrom('tasks')
          .select('id')
          .where('created_by', '=', createdBy)
          .executeTakeFirstOrThrow();
        return row.id;
      };
      const carol = await task('carol');
      const twins = await task('twins');
      const dora = await task('dora');
      const nobody = await task('nobody');

      expect(await migrateToLatest(h.db, h.dialect)).toContain('007-task-owner');
      const owners = Object.fromEntries(
        (await h.db.selectFrom('tasks').select(['id', 'owner']).execute()).map((r) => [r.id, r.owner]),
      );
      expect(owners).toEqual({ [carol]: 'token:tok_unique', [twins]: null, [dora]: null, [nobody]: null });
    } finally {
      await h.close();
      await tdb.drop();
    }
  });
});
