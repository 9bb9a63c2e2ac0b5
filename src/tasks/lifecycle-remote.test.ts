import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { connectedClientRow, DIALECTS, migratedPerDescribe } from '../../test/helpers/db.js';
import { waitFor } from '../../test/helpers/wait.js';
import { listAssignments } from '../storage/assignment-repo.js';
import { isUniqueViolation } from '../storage/executor.js';
import { updateClient, upsertClient } from '../storage/client-repo.js';
import { findTask, insertTask, updateTaskIf } from '../storage/task-repo.js';
import { claimRanks, claimTasks, type RankPlacement } from './lifecycle.js';

// Claims of ranks on clients whose socket another instance holds (issue 14, point 4): each takes
// a slot of the client only while it is connected through that instance with a slot free.
describe.each(DIALECTS)('claims on remote clients on %s', (dialect) => {
  const h = migratedPerDescribe(dialect);
  const NOW = new Date('2030-01-02T03:04:05Z');
  const AT = '2030-01-02 03:00:00';

  const client = (id: string, instanceId: string) =>
    upsertClient(h.db, connectedClientRow(id, instanceId, AT));

  const pending = (worldSize = 2) =>
    insertTask(h.db, {
      type: 'command',
      name: null,
      requirements: '{}',
      config: null,
      priority: 0,
      max_attempts: 3,
      world_size: worldSize,
      created_by: null,
      now: AT,
    });

  const via = (instanceId: string, maxTasks = 1) => ({ instanceId, maxTasks });
  const claim = (taskId: number, placements: RankPlacement[]) =>
    h.db.transaction().execute((trx) => claimTasks(trx, [{ taskId, placements, attempts: 0, now: NOW }]));

  it('takes a free slot of a remote client, and refuses a full, moved or gone one', async () => {
    await client('r-free', 'i-b');
    const first = await pending();
    const ps = [
      { rank: 0, clientId: 'l-0' },
      { rank: 1, clientId: 'r-free', via: via('i-b') },
    ];
    expect(await claim(first, ps)).not.toBeNull();
    expect((await listAssignments(h.db, first)).map((a) => a.client_id).sort()).toEqual(['l-0', 'r-free']);

    // max_tasks 1, one live assignment: full. With two slots it takes the second.
    const second = await pending();
    const again = [
      { rank: 0, clientId: 'l-1' },
      { rank: 1, clientId: 'r-free', via: via('i-b') },
    ];
    expect(await claim(second, again)).toBeNull();
    expect(await findTask(h.db, second)).toMatchObject({ status: 'pending', attempts: 0 });
    expect(await listAssignments(h.db, second)).toEqual([]);
    expect(await claim(second, [again[0]!, { ...again[1]!, via: via('i-b', 2) }])).not.toBeNull();

    // Moved to another instance since placement read it, or disconnected: no slot.
    await client('r-moved', 'i-c');
    await client('r-gone', 'i-b');
    await updateClient(h.db, 'r-gone', { connected: 0 });
    for (const [id, holder] of [
      ['r-moved', 'i-b'],
      ['r-gone', 'i-b'],
    ] as const) {
      const t = await pending();
      expect(
        await claim(t, [
          { rank: 0, clientId: 'l-2' },
          { rank: 1, clientId: id, via: via(holder) },
        ]),
      ).toBeNull();
      expect(await findTask(h.db, t)).toMatchObject({ status: 'pending' });
    }
  });

  it('re-places a lost rank on a remote client only with a slot free', async () => {
    await client('r-spare', 'i-b');
    const t = await pending();
    await updateTaskIf(h.db, t, ['pending'], { status: 'running', attempts: 1 });
    const full = await pending(1);
    expect(await claim(full, [{ rank: 0, clientId: 'r-spare', via: via('i-b') }])).not.toBeNull();
    const ranks = (maxTasks: number) =>
      h.db
        .transaction()
        .execute((trx) =>
          claimRanks(trx, t, [{ rank: 1, clientId: 'r-spare', via: via('i-b', maxTasks) }], NOW),
        );
    expect(await ranks(1)).toBeNull();
    expect(await listAssignments(h.db, t)).toEqual([]);
    expect(await ranks(2)).toMatchObject({ attempts: [1] });
  });

  it.runIf(dialect === 'mysql')(
    'two instances claiming the last slot of one client: the second waits, then loses',
    async () => {
      await client('r-last', 'i-b');
      const [a, b] = [await pending(1), await pending(1)];
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let claimed = false;
      // Instance A's claim commits only once instance B's is waiting on the client's row.
      const first = h.db.transaction().execute(async (trx) => {
        const won = await claimTasks(trx, [
          {
            taskId: a,
            placements: [{ rank: 0, clientId: 'r-last', via: via('i-b') }],
            attempts: 0,
            now: NOW,
          },
        ]);
        claimed = true;
        await held;
        return won;
      });
      await waitFor('A holding the row', () => claimed);
      const second = claim(b, [{ rank: 0, clientId: 'r-last', via: via('i-b') }]);
      await waitFor('B waiting for the row', async () => (await lockWaits()) > 0);
      release();
      expect(await first).not.toBeNull();
      expect(await second).toBeNull();
      expect(await findTask(h.db, b)).toMatchObject({ status: 'pending' });
    },
  );

  it('two instances re-placing the same rank at once: one wins, the other loses on the attempt key', async () => {
    const t = await pending();
    await updateTaskIf(h.db, t, ['pending'], { status: 'running', attempts: 1 });
    const replace = (clientId: string, hold?: Promise<void>, started?: () => void) =>
      h.db.transaction().execute(async (trx) => {
        const won = await claimRanks(trx, t, [{ rank: 1, clientId }], NOW);
        started?.();
        await hold;
        return won;
      });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let claimed = false;
    const first = replace('l-a', held, () => (claimed = true));
    await waitFor('A holding its claim', () => claimed);
    const second = replace('l-b').then(
      (won) => ({ won, err: null as unknown }),
      (err: unknown) => ({ won: null, err }),
    );
    // MariaDB: B read the same next attempt from its snapshot and waits on A's key. SQLite has one
    // writer: B runs after A commits, sees the rank held and gives up.
    if (dialect === 'mysql') await waitFor('B waiting for the key', async () => (await lockWaits()) > 0);
    release();
    expect(await first).toMatchObject({ attempts: [1] });
    const lost = await second;
    expect(lost.won).toBeNull();
    if (dialect === 'mysql') expect(isUniqueViolation(lost.err)).toBe(true);
    else expect(lost.err).toBeNull();
    const live = (await listAssignments(h.db, t)).filter((a) => a.rank === 1);
    expect(live.map((a) => [a.client_id, a.attempt])).toEqual([['l-a', 1]]);
  });

  async function lockWaits(): Promise<number> {
    // Transactions of this test's database only: other suites may share the server.
    const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.innodb_trx t
      JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id
      WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()`.execute(h.db);
    return Number(r.rows[0]?.n ?? 0);
  }
});
