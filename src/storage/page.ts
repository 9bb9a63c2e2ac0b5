import type { SelectQueryBuilder } from 'kysely';

/**
 * One page of a filtered list and how many rows the filter matches in all, read at once:
 * `select` picks and orders the page's rows from `filtered` (the limit and offset are added
 * here), and the total counts every row of `filtered`.
 */
export async function pageOf<DB, TB extends keyof DB, R>(
  filtered: SelectQueryBuilder<DB, TB, object>,
  select: (q: SelectQueryBuilder<DB, TB, object>) => SelectQueryBuilder<DB, TB, R>,
  page: { limit: number; offset: number },
): Promise<{ rows: R[]; total: number }> {
  const [rows, count] = await Promise.all([
    select(filtered).limit(page.limit).offset(page.offset).execute(),
    filtered.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow(),
  ]);
  // Kysely cannot resolve the selection's type over a generic table; the row is { n }.
  return { rows, total: Number((count as { n: number | string }).n) };
}
