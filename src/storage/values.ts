/** Clock injected wherever time matters, so tests can move it. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** The last time formatted: a busy server formats the same millisecond many times over. */
let lastMs = Number.NaN;
let lastIso = '';

/** 'YYYY-MM-DD HH:MM:SS' (seed DATETIME columns) or with '.fff' (AI Farm's DATETIME(3)). */
export function toDbTime(d: Date, millis = false): string {
  const ms = d.getTime();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = d.toISOString();
  }
  return `${lastIso.slice(0, 10)} ${lastIso.slice(11, millis ? 23 : 19)}`;
}

/** A database time back to ISO 8601 UTC for the API. */
export function fromDbTime(v: string | null): string | null {
  if (v === null) return null;
  const s = String(v);
  return `${s.slice(0, 10)}T${s.slice(11)}Z`;
}

/** JSON columns read back as text (SQLite, MariaDB) or already parsed (MySQL 8). */
export function parseJson<T = unknown>(v: unknown): T | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return JSON.parse(v) as T;
  if (Buffer.isBuffer(v)) return JSON.parse(v.toString('utf8')) as T;
  return v as T;
}

export function toJson(v: unknown): string {
  return JSON.stringify(v ?? null);
}

/** Runs a conditional UPDATE; true when it changed a row (the condition held: this writer won). */
export async function updatedAny(q: {
  executeTakeFirst(): Promise<{ numUpdatedRows: bigint }>;
}): Promise<boolean> {
  return Number((await q.executeTakeFirst()).numUpdatedRows) > 0;
}
