/**
 * The original AI Farm's task body: one flat object, as its admin panel's form and its API
 * docs' example POST it (`type, name, url, version, batch_size, learning_rate, epochs,
 * distributed, n_clients, aggregation_frequency, warmup_epochs, requirements, priority,
 * data_config`). It is read into our CreateTaskBody: fields that are not ours go into
 * `config` (where the original stored its whole body, and where its client reads them),
 * `n_clients` of a distributed task becomes `world_size`, and a `url` at our model server
 * names a registry version as `config.model`.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { CreateTaskBody, Requirements } from '../api/tasks.js';
import { badRequest, type AppError } from '../errors.js';

/** Fields only the original's body has: one of them marks a body as the original's. */
export const ORIGINAL_ONLY_FIELDS = [
  'url',
  'version',
  'batch_size',
  'learning_rate',
  'epochs',
  'distributed',
  'n_clients',
  'aggregation_frequency',
  'warmup_epochs',
  'data_config',
] as const;

const OUR_FIELDS = new Set(Object.keys(CreateTaskBody.properties));

/** A name or version in a registry reference (name@version). */
const MODEL_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const Optional = <T extends Parameters<typeof Type.Optional>[0]>(t: T) =>
  Type.Optional(Type.Union([t, Type.Null()]));

/** The original's body as we accept it; fields beyond these are kept in `config`. */
export const OriginalTaskBody = Type.Object(
  {
    type: Optional(Type.String({ minLength: 1, maxLength: 255, default: 'training' })),
    name: Optional(Type.String({ minLength: 1, maxLength: 255 })),
    url: Optional(
      Type.String({ minLength: 1, maxLength: 2048, description: 'Where its client GETs the model code.' }),
    ),
    version: Optional(Type.String({ minLength: 1, maxLength: 255 })),
    batch_size: Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    learning_rate: Optional(Type.Number({ exclusiveMinimum: 0 })),
    epochs: Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    distributed: Optional(Type.Boolean()),
    n_clients: Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    aggregation_frequency: Optional(Type.Integer({ minimum: 1 })),
    warmup_epochs: Optional(Type.Integer({ minimum: 0 })),
    requirements: Optional(Requirements),
    priority: Optional(Type.Integer({ minimum: -1000000, maximum: 1000000 })),
    data_config: Optional(Type.Record(Type.String(), Type.Unknown())),
    config: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    world_size: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  { additionalProperties: true },
);
export type OriginalTaskBody = Static<typeof OriginalTaskBody>;

const check = TypeCompiler.Compile(OriginalTaskBody);

/** What the conversion needs to know of this server. */
export interface OriginalBodyContext {
  /** The port our model server listens on (MODEL_SERVER_PORT, resolved). */
  modelServerPort: number;
  /** Host names that are this server: loopback, SERVER_HOST, the Host the request came to. */
  hosts: readonly string[];
  /** DEFAULT_EPOCHS and DEFAULT_BATCH_SIZE, which the original's form also defaulted. */
  defaultEpochs: number;
  defaultBatchSize: number;
}

/** Whether a POSTed body is the original's (it has a field only the original's has). */
export function isOriginalTaskBody(body: unknown): body is Record<string, unknown> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return false;
  return ORIGINAL_ONLY_FIELDS.some((f) => Object.hasOwn(body, f));
}

/**
 * NAME@VERSION when `url` is `http(s)://<this server>:<model server port>/models/NAME/VERSION`,
 * null when it points elsewhere, or a 400 when it is ours but names no valid version.
 */
export function modelOfUrl(
  url: string,
  ctx: Pick<OriginalBodyContext, 'modelServerPort' | 'hosts'>,
): { ok: true; model: string | null } | { ok: false; error: AppError } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return {
      ok: false,
      error: badRequest('invalid_url', `url is not an absolute URL: ${url.slice(0, 200)}`),
    };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { ok: true, model: null };
  const port = u.port === '' ? (u.protocol === 'https:' ? 443 : 80) : Number(u.port);
  const host = u.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const ours = ctx.hosts.map((h) => h.replace(/^\[|\]$/g, '').toLowerCase());
  if (port !== ctx.modelServerPort || !ours.includes(host)) return { ok: true, model: null };
  const parts = u.pathname.split('/').filter(Boolean);
  if (parts[0] !== 'models') return { ok: true, model: null };
  const [name, version] = parts.slice(1).map((p) => safeDecode(p));
  if (parts.length !== 3 || !name || !version || !MODEL_PART.test(name) || !MODEL_PART.test(version)) {
    return {
      ok: false,
      error: badRequest(
        'invalid_model_url',
        `url points at this server's model server but not at /models/NAME/VERSION (letters, digits, ".", "_", "-"): ${u.pathname.slice(0, 200)}`,
      ),
    };
  }
  return { ok: true, model: `${name}@${version}` };
}

function safeDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * Our task body for the original's, or a 400 naming the field that is wrong. The original's
 * defaults (those of its server's TaskCreate) are filled in, since its client reads
 * config['batch_size'], ['learning_rate'], ['epochs'], ['distributed'] and ['data_config']
 * without a fallback.
 */
export function fromOriginalBody(
  raw: Record<string, unknown>,
  ctx: OriginalBodyContext,
): { ok: true; body: CreateTaskBody } | { ok: false; error: AppError } {
  const body = structuredClone(raw);
  // The original's form allows min_cpu_cores 0 for "any"; ours starts at 1, so 0 means unset.
  const req = body.requirements as Record<string, unknown> | null | undefined;
  if (req && typeof req === 'object' && req.min_cpu_cores === 0) delete req.min_cpu_cores;
  if (!check.Check(body)) {
    const first = check.Errors(body).First();
    const where = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : '(body)';
    return {
      ok: false,
      error: badRequest('invalid_body', `body.${where} ${first?.message ?? 'is invalid'}`),
    };
  }
  const b = body as OriginalTaskBody & Record<string, unknown>;
  const distributed = b.distributed ?? false;
  const flat: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(b)) if (!OUR_FIELDS.has(k) && v !== null) flat[k] = v;
  const config: Record<string, unknown> = {
    batch_size: ctx.defaultBatchSize,
    learning_rate: 0.001,
    epochs: ctx.defaultEpochs,
    aggregation_frequency: 5,
    warmup_epochs: 2,
    data_config: { split_method: 'random', validation_ratio: 0.2 },
    ...flat,
    distributed,
    ...(b.name ? { name: b.name } : {}),
    ...(b.config ?? {}),
  };
  const fromClients = distributed && b.n_clients ? b.n_clients : undefined;
  if (b.world_size !== undefined && fromClients !== undefined && b.world_size !== fromClients) {
    return {
      ok: false,
      error: badRequest(
        'conflicting_world_size',
        `world_size (${b.world_size}) and n_clients (${b.n_clients}) of a distributed task differ`,
      ),
    };
  }
  if (config.model === undefined) {
    if (b.url) {
      const m = modelOfUrl(b.url, ctx);
      if (!m.ok) return m;
      if (m.model) config.model = m.model;
    } else if (b.name && b.version && MODEL_PART.test(b.name) && MODEL_PART.test(b.version)) {
      config.model = `${b.name}@${b.version}`;
    }
  }
  const out: CreateTaskBody = {
    type: b.type ?? 'training',
    requirements: b.requirements ?? {},
    config,
    priority: b.priority ?? 0,
    world_size: b.world_size ?? fromClients ?? 1,
  };
  if (b.name) out.name = b.name;
  if (b.max_attempts !== undefined) out.max_attempts = b.max_attempts;
  return { ok: true, body: out };
}
