/**
 * The HTTP schema compiler: bodies validated strictly (a "5" is not a number), query strings and
 * path parameters coerced from text, and an integer written as text accepted only in its
 * canonical form (`7`, not `7.0`, `0x7`, `7e0` or `07`) and only as a safe integer, so no two
 * spellings name one task and no id or offset reaches the database beyond what it can compare.
 */
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';

/** One validation failure, in Ajv's shape (read by formatValidationErrors). */
interface SchemaError {
  instancePath: string;
  schemaPath: string;
  keyword: string;
  message: string;
  params: Record<string, unknown>;
}

/** A compiled validator as Fastify calls it: true or false, with the reasons in `errors`. */
type Validate = ((data: unknown) => boolean) & { errors?: SchemaError[] | null };

const CANONICAL_INTEGER = /^-?(0|[1-9][0-9]*)$/;

/** The names of a schema's top-level properties typed integer (query and params are flat objects). */
function integerFields(schema: unknown): string[] {
  const props = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.entries(props)
    .filter(([, p]) => p.type === 'integer')
    .map(([name]) => name);
}

/** The first integer field of `data` written other than as a canonical safe integer. */
function nonCanonical(data: unknown, fields: readonly string[]): SchemaError | null {
  if (typeof data !== 'object' || data === null) return null;
  for (const name of fields) {
    const raw = (data as Record<string, unknown>)[name];
    const text = Array.isArray(raw) ? raw[0] : raw;
    if (typeof text !== 'string') continue;
    if (!CANONICAL_INTEGER.test(text)) {
      return {
        instancePath: `/${name}`,
        schemaPath: `#/properties/${name}/type`,
        keyword: 'type',
        message: 'must be an integer written in digits',
        params: {},
      };
    }
    if (!Number.isSafeInteger(Number(text))) {
      const message = `must be an integer between ${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}`;
      return {
        instancePath: `/${name}`,
        schemaPath: `#/properties/${name}/type`,
        keyword: 'maximum',
        message,
        params: {},
      };
    }
  }
  return null;
}

/** Fastify's validator compiler for the API's routes. */
export function schemaCompiler(): (route: { schema: unknown; httpPart?: string }) => Validate {
  // strictNumbers: NaN and Infinity are not numbers to any schema (a coerced "Infinity" passed
  // both `integer` and `maximum` without it).
  const options = { useDefaults: true, allErrors: false, strictNumbers: true } as const;
  const strict = addFormats.default(new Ajv({ ...options, coerceTypes: false }));
  const coercing = addFormats.default(new Ajv({ ...options, coerceTypes: 'array' }));
  return ({ schema, httpPart }) => {
    if (httpPart === 'body') return strict.compile(schema as object) as Validate;
    const validate = coercing.compile(schema as object);
    const fields = integerFields(schema);
    if (fields.length === 0) return validate as Validate;
    const checked: Validate = (data) => {
      const bad = nonCanonical(data, fields);
      if (bad) {
        checked.errors = [bad];
        return false;
      }
      const ok = validate(data);
      checked.errors = validate.errors as SchemaError[] | null | undefined;
      return ok;
    };
    return checked;
  };
}
