import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DIALECTS,
  openMigratedTestDatabase,
  openTestDatabaseWithWrites,
  type TestDatabase,
} from '../../test/helpers/db.js';
import { findClient, upsertClient } from '../storage/client-repo.js';
import type { DatabaseHandle } from '../storage/db.js';
import { parseJson, toDbTime, type Clock } from '../storage/values.js';
import type { WriteQueue } from '../storage/write-queue.js';
import { HeartbeatWriter } from './heartbeat-writer.js';
import { ClientRegistry, type FarmClient } from './registry.js';
import { sleep } from '../../test/helpers/wait.js';

const REGISTERED = '2030-01-01 00:00:00';

describe.each(DIALECTS)('HeartbeatWriter on %s', (dialect) => {
  let db: Awaited<ReturnType<typeof openTestDatabaseWithWrites>>;
  let h: DatabaseHandle;
  let writes: WriteQueue;
  let nowMs = Date.parse('2030-01-02T00:00:00Z');
  const clock: Clock = { now: () => new Date(nowMs) };
  const registry = new ClientRegistry();

  beforeAll(async () => {
    db = await openTestDatabaseWithWrites(dialect);
    ({ h, writes } = db);
  });
  afterAll(() => db?.close());

  const row = (id: string, connected: number) =>
    clientRow(id, connected, JSON.stringify({ cpu_utilization: 1 }));
  const client = (id: string, lastSeen: number, cpu: number | null, connected = true): FarmClient => ({
    id,
    tokenId: null,
    hardware: { cpuCores: 1, ramGb: 1, gpuMemoryGb: [] },
    maxTasks: 1,
    cordoned: false,
    send: connected ? () => undefined : null,
    owner: null,
    lastSeen,
    leases: new Map(),
    utilization: cpu === null ? null : { cpu_utilization: cpu },
  });

  it('writes every connected client heard from since the last pass, in chunks, and no other', async () => {
    // 300 clients: more than one statement's worth, the last chunk padded.
    const ids = Array.from({ length: 300 }, (_, i) => `hb-${String(i).padStart(3, '0')}`);
    for (const id of ids) await upsertClient(h.db, row(id, 1));
    await upsertClient(h.db, row('hb-gone', 0));
    const writer = new HeartbeatWriter({ registry, writes, clock });
    const seenAt = nowMs - 1500;
    ids.forEach((id, i) => registry.add(client(id, seenAt, i === 7 ? null : i)));
    // Disconnected: its row was written by the disconnect, the writer leaves it alone.
    registry.add(client('hb-gone', seenAt, 99, false));

    await writer.flush();
    for (const [i, id] of ids.entries()) {
      const r = await findClient(h.db, id);
      expect(r?.last_seen).toBe(toDbTime(new Date(seenAt)));
      // No utilization reported: the stored one stays.
      expect(parseJson(r?.utilization)).toEqual({ cpu_utilization: i === 7 ? 1 : i });
    }
    const gone = await findClient(h.db, 'hb-gone');
    expect(gone?.last_seen).toBe(REGISTERED);
    expect(parseJson(gone?.utilization)).toEqual({ cpu_utilization: 1 });

    // Next pass: only the client heard from since is written.
    nowMs += 2000;
    const heard = registry.get('hb-010') as FarmClient;
    heard.lastSeen = nowMs - 100;
    heard.utilization = { cpu_utilization: 55 };
    (registry.get('hb-011') as FarmClient).utilization = { cpu_utilization: 66 }; // not heard from
    await writer.flush();
    const r10 = await findClient(h.db, 'hb-010');
    expect(r10?.last_seen).toBe(toDbTime(new Date(nowMs - 100)));
    expect(parseJson(r10?.utilization)).toEqual({ cpu_utilization: 55 });
    expect(parseJson((await findClient(h.db, 'hb-011'))?.utilization)).toEqual({ cpu_utilization: 11 });

    // stop() writes what is left.
    const last = registry.get('hb-299') as FarmClient;
    nowMs += 500;
    last.lastSeen = nowMs;
    writer.start(() => undefined);
    await writer.stop();
    expect((await findClient(h.db, 'hb-299'))?.last_seen).toBe(toDbTime(new Date(nowMs)));
    for (const id of [...ids, 'hb-gone']) registry.remove(id);
  });
});

describe('SQLite checkpoints off the event loop', () => {
  let db: Awaited<ReturnType<typeof openMigratedTestDatabase>>;
  let tdb: TestDatabase;
  let h: DatabaseHandle;

  beforeAll(async () => {
    db = await openMigratedTestDatabase('sqlite');
    ({ tdb, h } = db);
  });
  afterAll(async () => {
    await db?.close();
  });

  it('copies committed pages back into the database file without a commit doing it', async () => {
    const before = statSync(tdb.url).size;
    // About 1 MB of rows in one commit: fewer pages than even SQLite's default threshold for
    // checkpointing in a commit (1,000), so only the checkpoint thread copies them back.
    const filler = 'x'.repeat(2000);
    await h.db.transaction().execute(async (trx) => {
      for (let i = 0; i < 500; i++) {
        await upsertClient(trx, { ...clientRow(`ck-${i}`), cpu_info: JSON.stringify({ filler }) });
      }
    });
    expect(statSync(`${tdb.url}-wal`).size).toBeGreaterThan(500_000);
    // The checkpoint thread passes every second; give it a generous while on a busy machine.
    const deadline = Date.now() + 30_000;
    while (statSync(tdb.url).size < before + 500_000 && Date.now() < deadline) {
      await sleep(100);
    }
    expect(statSync(tdb.url).size).toBeGreaterThan(before + 500_000);
    expect(await findClient(h.db, 'ck-499')).toMatchObject({ id: 'ck-499' });
  });
});

function clientRow(id: string, connected = 1, utilization: string | null = null) {
  return {
    id,
    hostname: id,
    cpu_info: '{}',
    ram_info: '{}',
    gpu_info: null,
    session_info: null,
    last_seen: REGISTERED,
    status: connected ? ('active' as const) : ('inactive' as const),
    connected,
    registered_at: REGISTERED,
    utilization,
  };
}
