/**
 * The training config of docs/training.md: its schema (which is also its type), the checks
 * that need more than one field, and the defaults (DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE).
 * A task is a training task when its config has `rounds`.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { badRequest, type AppError } from '../errors.js';
import type { StrategySpec } from './aggregation/types.js';
import { checkOverSelect } from './over-select.js';
import { checkSampling, SamplingKeys, type SamplingSettings } from './sampling-config.js';

const STRATEGIES = ['fedavg', 'fedprox', 'median', 'trimmed_mean', 'krum', 'multi_krum'] as const;
export type StrategyName = (typeof STRATEGIES)[number];

const Fraction = Type.Number({ minimum: 0, maximum: 1 });

/** `config.aggregation`: a strategy and its parameters. */
export const AggregationConfig = Type.Object(
  {
    strategy: Type.Unsafe<StrategyName>({ type: 'string', enum: [...STRATEGIES], default: 'fedavg' }),
    mu: Type.Optional(Type.Number({ minimum: 0, description: 'FedProx proximal coefficient.' })),
    beta: Type.Optional(Type.Number({ minimum: 0, exclusiveMaximum: 0.5, description: 'Trimmed fraction.' })),
    trim: Type.Optional(Type.Integer({ minimum: 0, description: 'Values trimmed from each end.' })),
    f: Type.Optional(Type.Integer({ minimum: 0, description: 'Byzantine updates tolerated (Krum).' })),
    m: Type.Optional(Type.Integer({ minimum: 1, description: 'Updates averaged by multi-Krum.' })),
    max_weight_share: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1,
        description:
          "FedAvg/FedProx: largest share of a round's total weight one update may carry; larger sample counts are lowered to it. Default 1 (no cap).",
      }),
    ),
  },
  { additionalProperties: false },
);

/** The keys of a training task's config that the server reads; other keys pass through. */
export const TrainingConfigSchema = Type.Object(
  {
    rounds: Type.Integer({ minimum: 1, maximum: 100_000, description: 'Aggregation rounds.' }),
    epochs: Type.Optional(Type.Integer({ minimum: 1, description: 'Local epochs; DEFAULT_EPOCHS.' })),
    batch_size: Type.Optional(Type.Integer({ minimum: 1, description: 'DEFAULT_BATCH_SIZE.' })),
    aggregation: Type.Optional(AggregationConfig),
    quorum: Type.Optional(Type.Integer({ minimum: 1, description: 'Default world_size.' })),
    round_deadline_s: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: 'Default 600.' })),
    shards: Type.Optional(
      Type.Union([Type.Literal('even'), Type.Array(Type.Tuple([Fraction, Fraction]), { maxItems: 1000 })]),
    ),
    seed: Type.Optional(Type.Integer()),
    n_clients: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    mode: Type.Optional(
      Type.Union([Type.Literal('sync'), Type.Literal('async')], { description: 'Default sync.' }),
    ),
    buffer_size: Type.Optional(Type.Integer({ minimum: 1, description: 'Async: updates per version.' })),
    max_staleness: Type.Optional(Type.Integer({ minimum: 0, description: 'Async: default 10.' })),
    staleness: Type.Optional(
      Type.Union([Type.Literal('constant'), Type.Literal('polynomial'), Type.Literal('hinge')], {
        description: 'Async: default polynomial.',
      }),
    ),
    a: Type.Optional(Type.Number({ minimum: 0, description: 'Async: staleness exponent/slope.' })),
    b: Type.Optional(Type.Number({ minimum: 0, description: 'Async: hinge staleness.' })),
    server_lr: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'Default 1.' })),
    ...SamplingKeys,
    over_select: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        description:
          'Sync: extra ranks beyond the K updates that close a round (an integer >= 1, or 0 < x < 1: ceil(x K)). Default none.',
      }),
    ),
  },
  { additionalProperties: true },
);

/** The settings of asynchronous buffered aggregation (docs/training.md, "Asynchronous mode"). */
export interface AsyncSettings {
  buffer_size: number;
  max_staleness: number;
  staleness: 'constant' | 'polynomial' | 'hinge';
  a: number;
  b: number;
  server_lr: number;
}

const ASYNC_KEYS = ['buffer_size', 'max_staleness', 'staleness', 'a', 'b', 'server_lr'] as const;

/** A validated training config with every default filled in (what tasks.config stores). */
export interface TrainingConfig extends Record<string, unknown>, Partial<SamplingSettings> {
  rounds: number;
  epochs: number;
  batch_size: number;
  aggregation: Static<typeof AggregationConfig>;
  quorum: number;
  round_deadline_s: number;
  shards: 'even' | [number, number][];
  seed: number;
  /** Absent (older tasks) means sync. */
  mode?: 'sync' | 'async';
  /** Async only: filled with its defaults. */
  async?: AsyncSettings;
  /** Sync only, as given: extra ranks per round (see overSelectExtra); absent means none. */
  over_select?: number;
}

/** Async defaults: versions an update may lag behind, and the staleness weighting's parameters. */
export const DEFAULT_MAX_STALENESS = 10;
export const DEFAULT_POLYNOMIAL_A = 0.5;
export const DEFAULT_HINGE_A = 10;
export const DEFAULT_HINGE_B = 4;

/** Seconds a round waits for every rank when the config names no deadline. */
export const DEFAULT_ROUND_DEADLINE_S = 600;

export interface TrainingDefaults {
  defaultEpochs: number;
  defaultBatchSize: number;
}

const ajv = new Ajv({ coerceTypes: false, useDefaults: true, allErrors: false });
const check = ajv.compile<Static<typeof TrainingConfigSchema>>(TrainingConfigSchema);

/** True when a task config asks for distributed training. */
export function isTrainingConfig(config: Record<string, unknown> | null | undefined): boolean {
  return config !== null && config !== undefined && config.rounds !== undefined;
}

/**
 * Validates a training task's config and fills its defaults. Returns the config to store and
 * the world size (the body's, or `config.n_clients`), or a 400 naming the field.
 */
export function prepareTrainingConfig(
  raw: Record<string, unknown>,
  bodyWorldSize: number | undefined,
  defaults: TrainingDefaults,
): { ok: true; config: TrainingConfig; worldSize: number } | { ok: false; error: AppError } {
  const copy = structuredClone(raw);
  if (!check(copy)) {
    const e = check.errors?.[0];
    const where = `body/config${e?.instancePath ?? ''}`;
    const message =
      e?.keyword === 'required'
        ? `${where} is missing the required field '${String(e.params.missingProperty)}'`
        : e?.keyword === 'additionalProperties'
          ? `${where} has an unknown field '${String(e.params.additionalProperty)}'`
          : `${where} ${e?.message ?? 'is invalid'}`;
    return { ok: false, error: badRequest('validation_failed', message, { fields: [where] }) };
  }
  const bad = (field: string, message: string) => ({
    ok: false as const,
    error: badRequest('validation_failed', `body/config/${field} ${message}`, {
      fields: [`body/config/${field}`],
    }),
  });
  const nClients = copy.n_clients;
  // The HTTP schema fills world_size with its default 1, so 1 means "not given" next to n_clients.
  const explicit = bodyWorldSize !== undefined && bodyWorldSize !== 1 ? bodyWorldSize : undefined;
  if (nClients !== undefined && explicit !== undefined && nClients !== explicit) {
    return bad('n_clients', `(${nClients}) contradicts body/world_size (${explicit})`);
  }
  const sampled = checkSampling(copy, explicit ?? nClients, copy.mode ?? 'sync');
  if (!sampled.ok) return bad(sampled.field, sampled.message);
  const worldSize = sampled.worldSize ?? nClients ?? bodyWorldSize ?? 1;
  const aggregation = copy.aggregation ?? { strategy: 'fedavg' as const };
  const over = checkOverSelect(copy.over_select, copy.mode ?? 'sync', worldSize);
  if (!over.ok) return bad('over_select', over.message);
  const quorum = copy.quorum ?? over.k;
  if (quorum > over.k) {
    return bad(
      'quorum',
      over.k === worldSize
        ? `(${quorum}) must be at most world_size (${worldSize})`
        : `(${quorum}) must be at most the ${over.k} updates that close a round (world_size ${worldSize} less over_select)`,
    );
  }
  const shards = copy.shards ?? 'even';
  if (shards !== 'even') {
    if (shards.length !== worldSize) {
      return bad('shards', `must list one [start, end] range per rank (${worldSize}), got ${shards.length}`);
    }
    const i = shards.findIndex(([s, e]) => !(s < e));
    if (i >= 0) return bad(`shards/${i}`, 'must have start < end, both within [0, 1]');
  }
  const a = aggregation;
  switch (a.strategy) {
    case 'fedprox':
      if (a.mu === undefined) return bad('aggregation/mu', 'is required by fedprox');
      break;
    case 'trimmed_mean': {
      if ((a.beta === undefined) === (a.trim === undefined)) {
        return bad('aggregation/beta', 'or aggregation/trim (exactly one) is required by trimmed_mean');
      }
      const trimmed = a.trim ?? Math.floor((a.beta ?? 0) * quorum);
      if (2 * trimmed >= quorum) {
        return bad('aggregation/trim', `trims ${trimmed} from each end, too many for quorum ${quorum}`);
      }
      break;
    }
    case 'krum':
    case 'multi_krum': {
      if (a.f === undefined) return bad('aggregation/f', `is required by ${a.strategy}`);
      if (quorum < 2 * a.f + 3) {
        return bad(
          'aggregation/f',
          `(${a.f}) needs at least 2f+3 = ${2 * a.f + 3} updates per round; quorum is ${quorum}`,
        );
      }
      if (a.strategy === 'multi_krum') {
        if (a.m === undefined) return bad('aggregation/m', 'is required by multi_krum');
        if (a.m > quorum) return bad('aggregation/m', `(${a.m}) must be at most the quorum (${quorum})`);
      }
      break;
    }
    default:
      break;
  }
  const mode = copy.mode ?? 'sync';
  let asyncSettings: AsyncSettings | undefined;
  if (mode === 'sync') {
    const extra = ASYNC_KEYS.find((k) => copy[k] !== undefined);
    if (extra) return bad(extra, 'applies only with mode "async"');
  } else {
    if (a.strategy !== 'fedavg' && a.strategy !== 'fedprox') {
      return bad(
        'aggregation/strategy',
        `(${a.strategy}) cannot be used with mode "async": async folds each update into a running weighted sum as it arrives, while ${a.strategy} needs every update of a round at once (use fedavg or fedprox, or mode "sync")`,
      );
    }
    const k = copy.buffer_size ?? Math.ceil(worldSize / 2);
    if (k > worldSize) {
      return bad(
        'buffer_size',
        `(${k}) must be at most world_size (${worldSize}): a rank uploads once per round it starts in, so a larger buffer might never fill`,
      );
    }
    const kind = copy.staleness ?? 'polynomial';
    if (kind === 'constant' && (copy.a !== undefined || copy.b !== undefined))
      return bad(copy.a !== undefined ? 'a' : 'b', 'is not used by staleness "constant"');
    if (kind === 'polynomial' && copy.b !== undefined) return bad('b', 'is used only by staleness "hinge"');
    asyncSettings = {
      buffer_size: k,
      max_staleness: copy.max_staleness ?? DEFAULT_MAX_STALENESS,
      staleness: kind,
      a: copy.a ?? (kind === 'hinge' ? DEFAULT_HINGE_A : DEFAULT_POLYNOMIAL_A),
      b: copy.b ?? DEFAULT_HINGE_B,
      server_lr: copy.server_lr ?? 1,
    };
  }
  const {
    n_clients: _alias,
    buffer_size: _k,
    max_staleness: _m,
    staleness: _s,
    a: _a,
    b: _b,
    server_lr: _lr,
    ...rest
  } = copy;

  const config: TrainingConfig = {
    ...rest,
    rounds: copy.rounds,
    epochs: copy.epochs ?? defaults.defaultEpochs,
    batch_size: copy.batch_size ?? defaults.defaultBatchSize,
    aggregation,
    quorum,
    round_deadline_s: copy.round_deadline_s ?? DEFAULT_ROUND_DEADLINE_S,
    shards,
    seed: copy.seed ?? 0,
    mode,
    ...(asyncSettings ? { async: asyncSettings } : {}),
    ...(sampled.settings ?? {}),
  };
  return { ok: true, config, worldSize };
}

/** The aggregation job spec of a validated config. */
export function strategySpec(a: TrainingConfig['aggregation']): StrategySpec {
  switch (a.strategy) {
    case 'fedprox':
      return { strategy: 'fedprox', params: { mu: a.mu ?? 0 } };
    case 'trimmed_mean':
      return {
        strategy: 'trimmed_mean',
        params: a.trim !== undefined ? { trim: a.trim } : { beta: a.beta ?? 0 },
      };
    case 'krum':
      return { strategy: 'krum', params: { f: a.f ?? 0 } };
    case 'multi_krum':
      return { strategy: 'multi_krum', params: { f: a.f ?? 0, m: a.m ?? 1 } };
    case 'median':
      return { strategy: 'median' };
    default:
      return { strategy: 'fedavg' };
  }
}
