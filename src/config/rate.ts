/** A count per time window, as RATE_LIMIT and MAX_AUTH_FAILURES write it ("60/minute"). */
export interface Rate {
  max: number;
  windowMs: number;
}

const UNIT_MS: Record<string, number> = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

/** Parses "N/second|minute|hour|day" (already validated by the schema's pattern); null for "off". */
export function parseRate(spec: string): Rate | null {
  if (spec === 'off') return null;
  const [n, unit] = spec.split('/');
  return { max: Number(n), windowMs: UNIT_MS[unit ?? 'minute'] ?? 60_000 };
}
