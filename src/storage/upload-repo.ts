/** Resumable uploads of round updates (migration 011): see training/coordinator/resumable.ts. */
import type { Insertable, Selectable } from 'kysely';
import type { Executor } from './executor.js';
import type { UpdateUploadsTable } from './schema.js';
import { updatedAny } from './values.js';

type Db = Executor;
export type UploadRow = Selectable<UpdateUploadsTable>;

/** Numbers as numbers (MySQL answers BIGINT as strings) and the digests as a Buffer. */
function row(r: UploadRow): UploadRow {
  return {
    ...r,
    task_id: Number(r.task_id),
    round: Number(r.round),
    rank: Number(r.rank),
    attempt: Number(r.attempt),
    num_samples: Number(r.num_samples),
    length: Number(r.length),
    received: Number(r.received),
    created_at: Number(r.created_at),
    expires_at: Number(r.expires_at),
    piece_digests: Buffer.from(r.piece_digests),
  };
}

export async function insertUpload(db: Db, r: Insertable<UpdateUploadsTable>): Promise<void> {
  await db.insertInto('update_uploads').values(r).execute();
}

export async function findUpload(db: Db, id: string): Promise<UploadRow | undefined> {
  const r = await db.selectFrom('update_uploads').selectAll().where('id', '=', id).executeTakeFirst();
  return r && row(r);
}

/**
 * Records more bytes stored, only if the row still says `from` bytes (one writer per upload:
 * a stale writer changes nothing). Answers whether it did.
 */
export async function advanceUpload(
  db: Db,
  id: string,
  from: number,
  to: { received: number; piece_digests: Buffer; expires_at: number },
): Promise<boolean> {
  return updatedAny(
    db.updateTable('update_uploads').set(to).where('id', '=', id).where('received', '=', from),
  );
}

export async function deleteUpload(db: Db, id: string): Promise<void> {
  await db.deleteFrom('update_uploads').where('id', '=', id).execute();
}

/** Uploads whose expiry is before `now`, oldest first, at most `limit`. */
export async function expiredUploads(db: Db, now: number, limit: number): Promise<UploadRow[]> {
  const rows = await db
    .selectFrom('update_uploads')
    .selectAll()
    .where('expires_at', '<', now)
    .orderBy('expires_at')
    .limit(limit)
    .execute();
  return rows.map(row);
}
