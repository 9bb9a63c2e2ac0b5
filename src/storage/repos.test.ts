import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS, openMigratedTestDatabase } from '../../test/helpers/db.js';
import * as clients from './client-repo.js';
import type { DatabaseHandle } from './db.js';
import { migrateToLatest } from './migrate.js';
import * as tasks from './task-repo.js';
import * as tokens from './token-repo.js';
import { parseJson } from './values.js';

/** The repositories, once per dialect, each run on a fresh database of its own. */
describe.each(DIALECTS)('repositories on %s', (dialect) => {
  let db: Awaited<ReturnType<typeof openMigratedTestDatabase>>;
  let h: DatabaseHandle;

  beforeAll(async () => {
    db = await openMigratedTestDatabase(dialect);
    h = db.h;
    expect(db.applied).toContain('001-initial');
  });
  afterAll(() => db?.close());

  const NOW = '2030-01-02 03:04:05';
  const newTask = (over: Partial<tasks.NewTaskRow> = {}): tasks.NewTaskRow => ({
    type: 'command',
    name: null,
    requirements: JSON.stringify({ min_cpu_cores: 2 }),
    config: JSON.stringify({ command: 'echo hi', nested: { ok: true } }),
    priority: 0,
    max_attempts: 3,
    world_size: 1,
    created_by: 'alice',
    now: NOW,
    ...over,
  });

  describe('migrations', () => {
    it('have nothing left to do the second time', async () => {
      expect(await migrateToLatest(h.db, h.dialect)).toEqual([]);
    });
  });

  describe('task-repo', () => {
    it('inserts batches of any size in multi-row statements: ids in order, every value intact', async () => {
      for (const n of [2, 3, 300, 1000]) {
        const rows = Array.from({ length: n }, (_, i) =>
          newTask({ name: `bulk-${n}-${i}`, priority: i % 7 }),
        );
        const ids = await tasks.insertTasks(h.db, rows);
        expect(ids).toHaveLength(n);
        const found = await tasks.findTasks(h.db, ids);
        const byId = new Map(found.map((r) => [Number(r.id), r]));
        ids.forEach((id, i) => {
          expect(byId.get(id)).toMatchObject({ name: `bulk-${n}-${i}`, priority: i % 7, status: 'pending' });
        });
        await tasks.insertTaskEvents(
          h.db,
          ids.map((id, i) => ({ task_id: id, at: NOW, kind: 'created', message: `m${i}`, data: { i } })),
        );
        const events = await tasks.listTaskEvents(h.db, ids[n - 1] as number, 10);
        expect(events.map((e) => [e.message, parseJson(e.data)])).toEqual([[`m${n - 1}`, { i: n - 1 }]]);
      }
    });

    it('inserts a pending task and reads it back with JSON and times intact', async () => {
      const id = await tasks.insertTask(h.db, newTask({ name: 'ünïcødé ✓ 训练', priority: 7 }));
      expect(id).toBeGreaterThan(0);
      const row = await tasks.findTask(h.db, id);
      expect(row).toMatchObject({
        type: 'command',
        name: 'ünïcødé ✓ 训练',
        status: 'pending',
        priority: 7,
        created_by: 'alice',
        client_id: null,
        result: null,
        created_at: NOW,
        updated_at: NOW,
      });
      expect(parseJson(row?.requirements)).toEqual({ min_cpu_cores: 2 });
      expect(parseJson(row?.config)).toEqual({ command: 'echo hi', nested: { ok: true } });
      expect(Number(row?.attempts)).toBe(0);
      expect(Number(row?.max_attempts)).toBe(3);
      expect(await tasks.findTask(h.db, 999_999)).toBeUndefined();
    });

    it('lists with filters, newest first, paginated, with the total', async () => {
      const ids: number[] = [];
      for (let i = 0; i < 5; i++)
        ids.push(
          await tasks.insertTask(h.db, newTask({ type: 'listing', created_by: i < 3 ? 'bob' : 'carol' })),
        );
      await tasks.updateTaskIf(h.db, ids[0] as number, ['pending'], {
        status: 'running',
        client_id: 'gpu-1',
      });

      const page = await tasks.listTasks(h.db, { type: 'listing', limit: 2, offset: 0 });
      expect(page.total).toBe(5);
      expect(page.rows.map((r) => r.id)).toEqual([ids[4], ids[3]]);
      const last = await tasks.listTasks(h.db, { type: 'listing', limit: 2, offset: 4 });
      expect(last.rows.map((r) => r.id)).toEqual([ids[0]]);

      expect(
        (await tasks.listTasks(h.db, { type: 'listing', status: 'running', limit: 10, offset: 0 })).total,
      ).toBe(1);
      expect(
        (await tasks.listTasks(h.db, { type: 'listing', client_id: 'gpu-1', limit: 10, offset: 0 })).total,
      ).toBe(1);
      expect(
        (await tasks.listTasks(h.db, { type: 'listing', created_by: 'bob', limit: 10, offset: 0 })).total,
      ).toBe(3);
      expect((await tasks.listTasks(h.db, { type: 'nothing-like-it', limit: 10, offset: 0 })).total).toBe(0);
    });

    it('updateTaskIf changes a task only while it is in one of the expected statuses', async () => {
      const id = await tasks.insertTask(h.db, newTask());
      expect(await tasks.updateTaskIf(h.db, id, ['running'], { status: 'completed' })).toBe(false);
      expect((await tasks.findTask(h.db, id))?.status).toBe('pending');

      const result = JSON.stringify({ accuracy: 0.98 });
      expect(
        await tasks.updateTaskIf(h.db, id, ['pending', 'paused'], {
          status: 'running',
          client_id: 'c1',
          progress: 12.5,
          result,
          started_at: '2030-01-02 03:05:00',
        }),
      ).toBe(true);
      const row = await tasks.findTask(h.db, id);
      expect(row).toMatchObject({ status: 'running', client_id: 'c1', started_at: '2030-01-02 03:05:00' });
      expect(Number(row?.progress)).toBe(12.5);
      expect(parseJson(row?.result)).toEqual({ accuracy: 0.98 });
      expect(await tasks.updateTaskIf(h.db, 999_999, ['pending'], { status: 'running' })).toBe(false);
    });

    it('lets exactly one of many concurrent conditional updates win', async () => {
      const id = await tasks.insertTask(h.db, newTask());
      const attempts = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          tasks.updateTaskIf(h.db, id, ['pending'], { status: 'running', client_id: `racer-${i}` }),
        ),
      );
      expect(attempts.filter(Boolean)).toHaveLength(1);
      const winner = attempts.indexOf(true);
      expect((await tasks.findTask(h.db, id))?.client_id).toBe(`racer-${winner}`);
    });

    it('keeps events in order and deletes them (and assignments, metrics) with their task', async () => {
      const id = await tasks.insertTask(h.db, newTask());
      const other = await tasks.insertTask(h.db, newTask());
      await tasks.insertTaskEvent(h.db, {
        task_id: id,
        at: '2030-01-02 03:04:05.100',
        kind: 'created',
        message: 'm1',
      });
      await tasks.insertTaskEvent(h.db, {
        task_id: id,
        at: '2030-01-02 03:04:05.200',
        kind: 'paused',
        message: 'm2',
        data: { from: 'pending' },
      });
      await tasks.insertTaskEvent(h.db, { task_id: other, at: NOW, kind: 'created', message: 'other' });
      await h.db
        .insertInto('task_assignments')
        .values({
          task_id: id,
          client_id: 'c1',
          assigned_at: NOW,
          status: 'assigned',
          rank: 0,
          attempt: 1,
          updated_at: NOW,
        })
        .execute();
      await h.db
        .insertInto('task_metrics')
        .values({ task_id: id, at: NOW, rank: 0, attempt: 1, progress: 1, metrics: '{"loss":[1]}' })
        .execute();

      const events = await tasks.listTaskEvents(h.db, id, 10);
      expect(events.map((e) => e.kind)).toEqual(['paused', 'created']);
      expect(parseJson(events[0]?.data)).toEqual({ from: 'pending' });
      expect(events[0]?.at).toBe('2030-01-02 03:04:05.200');
      expect(await tasks.listTaskEvents(h.db, id, 1)).toHaveLength(1);

      expect(await tasks.deleteTask(h.db, id)).toBe(true);
      expect(await tasks.deleteTask(h.db, id)).toBe(false);
      expect(await tasks.findTask(h.db, id)).toBeUndefined();
      expect(await tasks.listTaskEvents(h.db, id, 10)).toEqual([]);
      const left = async (table: 'task_assignments' | 'task_metrics') =>
        (await h.db.selectFrom(table).select('id').where('task_id', '=', id).execute()).length;
      expect(await left('task_assignments')).toBe(0);
      expect(await left('task_metrics')).toBe(0);
      // Only that task's rows went.
      expect(await tasks.listTaskEvents(h.db, other, 10)).toHaveLength(1);
    });

    it('refuses an event for a task that does not exist (foreign key)', async () => {
      await expect(
        tasks.insertTaskEvent(h.db, { task_id: 987_654, at: NOW, kind: 'x', message: 'orphan' }),
      ).rejects.toThrow();
    });

    it('refuses a status outside the enum', async () => {
      const id = await tasks.insertTask(h.db, newTask());
      await expect(
        // @ts-expect-error -- deliberately not a TaskStatus
        tasks.updateTaskIf(h.db, id, ['pending'], { status: 'sleeping' }),
      ).rejects.toThrow();
    });

    it('counts tasks by status', async () => {
      const before = await tasks.countTasksByStatus(h.db);
      const id = await tasks.insertTask(h.db, newTask());
      await tasks.updateTaskIf(h.db, id, ['pending'], { status: 'cancelled' });
      const after = await tasks.countTasksByStatus(h.db);
      expect(after.cancelled).toBe((before.cancelled ?? 0) + 1);
      expect(after.pending).toBe(before.pending);
    });

    it('runs changes in a transaction that rolls back as a whole', async () => {
      const before = (await tasks.listTasks(h.db, { type: 'tx', limit: 1, offset: 0 })).total;
      await expect(
        h.db.transaction().execute(async (trx) => {
          const id = await tasks.insertTask(trx, newTask({ type: 'tx' }));
          await tasks.insertTaskEvent(trx, { task_id: id, at: NOW, kind: 'created', message: 'x' });
          throw new Error('abort');
        }),
      ).rejects.toThrow('abort');
      expect((await tasks.listTasks(h.db, { type: 'tx', limit: 1, offset: 0 })).total).toBe(before);
    });
  });

  describe('token-repo', () => {
    const token = (id: string, over: Partial<Parameters<typeof tokens.insertToken>[1]> = {}) => ({
      id,
      name: `name-${id}`,
      role: 'user' as const,
      token_hash: id.padEnd(64, '0'),
      created_at: '2030-01-01 00:00:00.000',
      created_by: 'test',
      ...over,
    });

    it('inserts, finds by id and by hash, and refuses a duplicate hash', async () => {
      await tokens.insertToken(h.db, token('tok_a'));
      expect(await tokens.findToken(h.db, 'tok_a')).toMatchObject({
        name: 'name-tok_a',
        role: 'user',
        revoked_at: null,
      });
      expect((await tokens.findTokenByHash(h.db, 'tok_a'.padEnd(64, '0')))?.id).toBe('tok_a');
      expect(await tokens.findTokenByHash(h.db, 'f'.repeat(64))).toBeUndefined();
      expect(await tokens.findToken(h.db, 'tok_none')).toBeUndefined();
      await expect(
        tokens.insertToken(h.db, token('tok_dup', { token_hash: 'tok_a'.padEnd(64, '0') })),
      ).rejects.toThrow();
    });

    it('revokes once, hides revoked tokens from the default list, and counts active admins', async () => {
      const admins = await tokens.countActiveAdminTokens(h.db);
      await tokens.insertToken(
        h.db,
        token('tok_adm', { role: 'admin', created_at: '2030-01-01 00:00:01.000' }),
      );
      await tokens.insertToken(h.db, token('tok_b', { created_at: '2030-01-01 00:00:02.000' }));
      expect(await tokens.countActiveAdminTokens(h.db)).toBe(admins + 1);

      expect(await tokens.revokeToken(h.db, 'tok_adm', '2030-02-01 00:00:00.123')).toBe(true);
      expect(await tokens.revokeToken(h.db, 'tok_adm', '2030-02-02 00:00:00.000')).toBe(false);
      expect((await tokens.findToken(h.db, 'tok_adm'))?.revoked_at).toBe('2030-02-01 00:00:00.123');
      expect(await tokens.countActiveAdminTokens(h.db)).toBe(admins);

      const active = (await tokens.listTokens(h.db, false)).map((t) => t.id);
      expect(active).toContain('tok_b');
      expect(active).not.toContain('tok_adm');
      const all = (await tokens.listTokens(h.db, true)).map((t) => t.id);
      expect(all).toContain('tok_adm');
      // Oldest first.
      expect(all.indexOf('tok_adm')).toBeLessThan(all.indexOf('tok_b'));
    });

    it('records when a token was last used', async () => {
      await tokens.insertToken(h.db, token('tok_used'));
      await tokens.touchToken(h.db, 'tok_used', '2030-03-01 10:00:00.500');
      expect((await tokens.findToken(h.db, 'tok_used'))?.last_used_at).toBe('2030-03-01 10:00:00.500');
    });

    it('writes the audit log with JSON detail', async () => {
      await tokens.insertAudit(h.db, {
        at: NOW,
        actor: 'alice',
        action: 'token.create',
        target: 'tok_x',
        detail: { role: 'user' },
      });
      await tokens.insertAudit(h.db, { at: NOW, actor: 'alice', action: 'token.revoke', target: 'tok_x' });
      const rows = await h.db
        .selectFrom('audit_log')
        .selectAll()
        .where('target', '=', 'tok_x')
        .orderBy('id')
        .execute();
      expect(rows.map((r) => r.action)).toEqual(['token.create', 'token.revoke']);
      expect(parseJson(rows[0]?.detail)).toEqual({ role: 'user' });
      expect(rows[1]?.detail).toBeNull();
    });
  });

  describe('client-repo', () => {
    const client = (id: string, over: Record<string, unknown> = {}) => ({
      id,
      cpu_info: JSON.stringify({ brand: 'Xeon', cores_logical: 8 }),
      ram_info: JSON.stringify({ total: 16e9 }),
      gpu_info: null,
      session_info: JSON.stringify({ total_tasks_completed: 0 }),
      last_seen: NOW,
      status: 'active' as const,
      hostname: `${id}.lab`,
      connected: 1,
      registered_at: NOW,
      ...over,
    });

    it('inserts a client, then updates it in place keeping its registration and cordon', async () => {
      await clients.upsertClient(h.db, client('c-1'));
      const first = await clients.findClient(h.db, 'c-1');
      expect(first).toMatchObject({ hostname: 'c-1.lab', status: 'active', registered_at: NOW });
      expect(parseJson(first?.cpu_info)).toEqual({ brand: 'Xeon', cores_logical: 8 });
      expect(Number(first?.cordoned)).toBe(0);

      expect(await clients.updateClient(h.db, 'c-1', { cordoned: 1 })).toBe(true);
      await clients.upsertClient(
        h.db,
        client('c-1', {
          gpu_info: JSON.stringify([{ id: 0, name: 'RTX' }]),
          last_seen: '2030-01-02 04:00:00',
          registered_at: '2031-01-01 00:00:00',
          cordoned: 0,
        }),
      );
      const again = await clients.findClient(h.db, 'c-1');
      expect(again?.registered_at).toBe(NOW);
      expect(again?.last_seen).toBe('2030-01-02 04:00:00');
      expect(Number(again?.cordoned)).toBe(1);
      expect(parseJson(again?.gpu_info)).toEqual([{ id: 0, name: 'RTX' }]);
      expect(await clients.updateClient(h.db, 'nobody', { cordoned: 1 })).toBe(false);
      expect(await clients.findClient(h.db, 'nobody')).toBeUndefined();
    });

    it('lists by status and connection, ordered by id, with the total', async () => {
      await clients.upsertClient(h.db, client('l-b', { status: 'inactive', connected: 0 }));
      await clients.upsertClient(h.db, client('l-a'));
      await clients.upsertClient(h.db, client('l-c'));
      const all = await clients.listClients(h.db, { limit: 100, offset: 0 });
      const ids = all.rows.map((r) => r.id).filter((id) => id.startsWith('l-'));
      expect(ids).toEqual(['l-a', 'l-b', 'l-c']);
      expect(all.total).toBe(all.rows.length);
      const inactive = await clients.listClients(h.db, { status: 'inactive', limit: 100, offset: 0 });
      expect(inactive.rows.map((r) => r.id)).toContain('l-b');
      expect(inactive.rows.every((r) => r.status === 'inactive')).toBe(true);
      const offline = await clients.listClients(h.db, { connected: false, limit: 100, offset: 0 });
      expect(offline.rows.every((r) => Number(r.connected) === 0)).toBe(true);
      const page = await clients.listClients(h.db, { limit: 1, offset: 1 });
      expect(page.rows).toHaveLength(1);
      expect(page.total).toBe(all.total);
    });

    it('refuses a status outside the seed enum', async () => {
      await expect(clients.upsertClient(h.db, client('bad', { status: 'asleep' }))).rejects.toThrow();
    });
  });
});
