import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/**
 * Checks a body against the API's own TypeBox schema and words each problem the way the
 * API does ("body/requirements/min_cpu_cores must be >= 1"), keyed by field path
 * ("requirements/min_cpu_cores"). The API stays the judge: this only answers sooner.
 */
export function validate(schema: TSchema, body: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of Value.Errors(schema, body)) {
    const s = e.schema as Record<string, unknown>;
    const v = e.value;
    const path = e.path.replace(/^\//, '');
    let msg = e.message;
    if (v === undefined && e.path) msg = `is missing`;
    else if (s.type === 'integer' && typeof v === 'number' && !Number.isInteger(v)) msg = 'must be integer';
    else if ((s.type === 'integer' || s.type === 'number') && typeof v !== 'number')
      msg = `must be ${String(s.type)}`;
    else if (typeof s.minimum === 'number' && typeof v === 'number' && v < s.minimum)
      msg = `must be >= ${s.minimum}`;
    else if (typeof s.maximum === 'number' && typeof v === 'number' && v > s.maximum)
      msg = `must be <= ${s.maximum}`;
    else if (typeof s.minLength === 'number' && typeof v === 'string' && v.length < s.minLength)
      msg = `must NOT have fewer than ${s.minLength} characters`;
    else if (typeof s.maxLength === 'number' && typeof v === 'string' && v.length > s.maxLength)
      msg = `must NOT have more than ${s.maxLength} characters`;
    out[path] ??= `body/${path} ${msg}`;
  }
  return out;
}
