import type { Selectable } from 'kysely';
import type { Executor } from './executor.js';
import type { CodeBundlesTable, ModelVersionsTable, TaskStatus } from './schema.js';
import { pageOf } from './page.js';

type Db = Executor;
export type CodeBundleRow = Selectable<CodeBundlesTable>;
export type ModelVersionRow = Selectable<ModelVersionsTable>;

/** Statuses of a task that may still run its code: its code may not be deleted. */
export const CODE_IN_USE_STATUSES: readonly TaskStatus[] = ['pending', 'running', 'paused'];

/** BIGINT columns come back as strings from mysql2. */
const sized = <T extends { size: number | string; entries?: number | string }>(r: T): T => ({
  ...r,
  size: Number(r.size),
  ...(r.entries === undefined ? {} : { entries: Number(r.entries) }),
});

export async function findBundle(db: Db, digest: string): Promise<CodeBundleRow | undefined> {
  const row = await db.selectFrom('code_bundles').selectAll().where('digest', '=', digest).executeTakeFirst();
  return row && sized(row);
}

/** Records a blob unless it is known already (content-addressed: the same digest is the same bytes). */
export async function insertBundleIfAbsent(db: Db, row: CodeBundleRow): Promise<boolean> {
  if (await findBundle(db, row.digest)) return false;
  try {
    await db.insertInto('code_bundles').values(row).execute();
    return true;
  } catch (err) {
    // Two pushes of the same bytes at once: the other one recorded it.
    if (await findBundle(db, row.digest)) return false;
    throw err;
  }
}

export async function findModelVersion(
  db: Db,
  name: string,
  version: string,
): Promise<ModelVersionRow | undefined> {
  const row = await db
    .selectFrom('model_versions')
    .selectAll()
    .where('name', '=', name)
    .where('version', '=', version)
    .executeTakeFirst();
  return row && sized(row);
}

export async function insertModelVersion(db: Db, row: ModelVersionRow): Promise<void> {
  await db.insertInto('model_versions').values(row).execute();
}

export async function deleteModelVersion(db: Db, name: string, version: string): Promise<boolean> {
  const res = await db
    .deleteFrom('model_versions')
    .where('name', '=', name)
    .where('version', '=', version)
    .executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}

/** A page of versions, newest first, optionally of one model. */
export async function listModelVersions(
  db: Db,
  q: { name?: string | undefined; limit: number; offset: number },
): Promise<{ rows: ModelVersionRow[]; total: number }> {
  let base = db.selectFrom('model_versions');
  if (q.name !== undefined) base = base.where('name', '=', q.name);
  const page = await pageOf(
    base,
    (b) => b.selectAll().orderBy('created_at', 'desc').orderBy('name').orderBy('version'),
    q,
  );
  return { rows: page.rows.map(sized), total: page.total };
}

/** Records the code of tasks just created (same transaction as the tasks). */
export async function insertTaskCode(
  db: Db,
  rows: readonly { task_id: number; digest: string; model: string | null }[],
): Promise<void> {
  if (rows.length > 0)
    await db
      .insertInto('task_code')
      .values([...rows])
      .execute();
}

/** Tasks naming a model version: ids and statuses, newest first, at most `limit`. */
export async function tasksUsingModel(
  db: Db,
  model: string,
  limit: number,
  statuses?: readonly TaskStatus[],
): Promise<{ id: number; status: TaskStatus }[]> {
  let q = db
    .selectFrom('task_code')
    .innerJoin('tasks', 'tasks.id', 'task_code.task_id')
    .select(['tasks.id', 'tasks.status'])
    .where('task_code.model', '=', model);
  if (statuses) q = q.where('tasks.status', 'in', [...statuses]);
  const rows = await q.orderBy('tasks.id', 'desc').limit(limit).execute();
  return rows.map((r) => ({ id: Number(r.id), status: r.status }));
}

/** The newest tasks naming each of `models` ('name@version'), at most `perModel` each. */
export async function tasksUsingModels(
  db: Db,
  models: readonly string[],
  perModel: number,
): Promise<Map<string, { id: number; status: TaskStatus }[]>> {
  const out = new Map<string, { id: number; status: TaskStatus }[]>();
  if (models.length === 0) return out;
  const rows = await db
    .selectFrom('task_code')
    .innerJoin('tasks', 'tasks.id', 'task_code.task_id')
    .select(['task_code.model', 'tasks.id', 'tasks.status'])
    .where('task_code.model', 'in', [...models])
    .orderBy('tasks.id', 'desc')
    .limit(models.length * perModel * 4)
    .execute();
  for (const r of rows) {
    const list = out.get(r.model as string) ?? [];
    if (list.length < perModel) list.push({ id: Number(r.id), status: r.status });
    out.set(r.model as string, list);
  }
  return out;
}

/** Whether any task or model version still refers to a blob (else its file may go). */
export async function bundleReferenced(db: Db, digest: string): Promise<boolean> {
  const [m, t] = await Promise.all([
    db.selectFrom('model_versions').select('name').where('digest', '=', digest).limit(1).executeTakeFirst(),
    db.selectFrom('task_code').select('task_id').where('digest', '=', digest).limit(1).executeTakeFirst(),
  ]);
  return m !== undefined || t !== undefined;
}

export async function deleteBundle(db: Db, digest: string): Promise<void> {
  await db.deleteFrom('code_bundles').where('digest', '=', digest).execute();
}
