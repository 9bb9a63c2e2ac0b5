/**
 * The config keys of clients sampled per round (docs/training.md, "Clients sampled per
 * round"): `clients_per_round` or `fraction`, `min_available`, `sampling` and `speed_floor`,
 * their schema and the checks that need more than one field. Sync mode only.
 */
import { Type } from '@sinclair/typebox';
import type { ClientCapacity, SampledPlacement } from '../scheduling/policy.js';
import { sampleClients, seededRandom, type SampleCandidate } from '../scheduling/sampling.js';
import { overSelectExtra } from './over-select.js';

/** The schema of the sampling keys (spread into TrainingConfigSchema). */
export const SamplingKeys = {
  clients_per_round: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 1000, description: 'Clients (ranks) trained per round.' }),
  ),
  fraction: Type.Optional(
    Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      description: 'Share of the eligible connected clients sampled each round.',
    }),
  ),
  min_available: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 100_000,
      description:
        'Eligible connected clients a round needs to start; default clients_per_round (1 with fraction).',
    }),
  ),
  sampling: Type.Optional(
    Type.Union([Type.Literal('uniform'), Type.Literal('speed')], { description: 'Default uniform.' }),
  ),
  speed_floor: Type.Optional(
    Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      description: "sampling speed: no client's weight below this share of the highest; default 0.1.",
    }),
  ),
};

export const SAMPLING_KEYS = [
  'clients_per_round',
  'fraction',
  'min_available',
  'sampling',
  'speed_floor',
] as const;

/** Default of `speed_floor`. */
export const DEFAULT_SPEED_FLOOR = 0.1;

/** A sampled task's settings, as stored in its config (defaults filled in). */
export interface SamplingSettings {
  /** Ranks per round; absent with `fraction`. */
  clients_per_round?: number;
  fraction?: number;
  min_available: number;
  sampling: 'uniform' | 'speed';
  speed_floor: number;
  /** over_select, when the task has it: each round samples its extra clients too. */
  over_select?: number;
}

interface RawSampling {
  clients_per_round?: number | undefined;
  fraction?: number | undefined;
  min_available?: number | undefined;
  sampling?: 'uniform' | 'speed' | undefined;
  speed_floor?: number | undefined;
  over_select?: number | undefined;
}

/**
 * Checks the sampling keys of a validated config. `worldSize` is the body's explicit world
 * size (or n_clients). Answers the settings (none when the task samples nothing) and the world
 * size they make: clients_per_round; with fraction, the body's world size (the most ranks a
 * round may sample), which must then be given.
 */
export function checkSampling(
  raw: RawSampling,
  worldSize: number | undefined,
  mode: 'sync' | 'async',
):
  | { ok: true; settings?: SamplingSettings; worldSize?: number }
  | { ok: false; field: string; message: string } {
  const given = SAMPLING_KEYS.find((k) => raw[k] !== undefined);
  if (given === undefined) return { ok: true };
  if (mode === 'async') {
    return {
      ok: false,
      field: given,
      message:
        'applies only with mode "sync": an asynchronous task keeps every rank training at its own pace, so there is no round to sample clients for',
    };
  }
  const { clients_per_round: k, fraction } = raw;
  if (k !== undefined && fraction !== undefined) {
    return {
      ok: false,
      field: 'fraction',
      message: 'and body/config/clients_per_round cannot both be given',
    };
  }
  if (k === undefined && fraction === undefined) {
    return {
      ok: false,
      field: given,
      message: 'needs body/config/clients_per_round or body/config/fraction (the clients sampled per round)',
    };
  }
  const sampling = raw.sampling ?? 'uniform';
  if (raw.speed_floor !== undefined && sampling !== 'speed') {
    return { ok: false, field: 'speed_floor', message: 'is used only by sampling "speed"' };
  }
  const common = { sampling, speed_floor: raw.speed_floor ?? DEFAULT_SPEED_FLOOR };
  if (k !== undefined) {
    // With over_select a round samples its extra clients too: K + extras ranks.
    const extra = overSelectExtra(raw.over_select, k);
    const ranks = k + extra;
    const what = extra > 0 ? `clients per round plus over_select's ${extra}` : 'clients per round';
    if (worldSize !== undefined && worldSize !== ranks) {
      return {
        ok: false,
        field: 'clients_per_round',
        message: `(${k}) contradicts body/world_size (${worldSize}): a sampled task's world_size is its ${what} (${ranks})`,
      };
    }
    const min = raw.min_available ?? ranks;
    if (min < ranks) {
      return {
        ok: false,
        field: 'min_available',
        message: `(${min}) must be at least the ${what} (${ranks}): every rank of a round trains on its own client`,
      };
    }
    return { ok: true, worldSize: ranks, settings: { clients_per_round: k, min_available: min, ...common } };
  }
  if (worldSize === undefined) {
    return {
      ok: false,
      field: 'fraction',
      message: 'needs body/world_size: the most clients (ranks) one round may sample',
    };
  }
  const min = raw.min_available ?? 1;
  if (min > worldSize) {
    return {
      ok: false,
      field: 'min_available',
      message: `(${min}) must be at most body/world_size (${worldSize}), the most clients a round samples`,
    };
  }
  return { ok: true, worldSize, settings: { fraction: fraction as number, min_available: min, ...common } };
}

/**
 * Clients one round samples: K = clients_per_round, or with fraction max(min_available,
 * ceil(fraction x eligible)); plus over_select's extras for K; at most the task's world size.
 */
export function clientsForRound(s: SamplingSettings, eligible: number, worldSize: number): number {
  const k = s.clients_per_round ?? Math.max(s.min_available, Math.ceil((s.fraction ?? 1) * eligible));
  return Math.min(worldSize, k + overSelectExtra(s.over_select, k));
}

/** The sampling settings of a stored config, or null when the task samples nothing. */
export function samplingOf(config: Partial<SamplingSettings> | null | undefined): SamplingSettings | null {
  if (!config || (config.clients_per_round === undefined && config.fraction === undefined)) return null;
  return {
    ...(config.clients_per_round !== undefined ? { clients_per_round: config.clients_per_round } : {}),
    ...(config.fraction !== undefined ? { fraction: config.fraction } : {}),
    min_available: config.min_available ?? config.clients_per_round ?? 1,
    sampling: config.sampling ?? 'uniform',
    speed_floor: config.speed_floor ?? DEFAULT_SPEED_FLOOR,
    ...(config.over_select !== undefined ? { over_select: config.over_select } : {}),
  };
}

/**
 * Samples one round's clients among the eligible ones: null when fewer than min_available are
 * eligible. The random source is seeded from the config's seed and the round.
 */
export function sampleRound(
  s: SamplingSettings,
  seed: number,
  round: number,
  eligible: readonly SampleCandidate[],
  worldSize: number,
): SampledPlacement[] | null {
  if (eligible.length < s.min_available) return null;
  const n = clientsForRound(s, eligible.length, worldSize);
  const picks = sampleClients(s.sampling, eligible, n, seededRandom(seed, round), s.speed_floor);
  return picks.map((p) => ({ ...p, method: s.sampling, eligible: eligible.length }));
}

/**
 * A queued task's config and, for a sampled training task's first round (not a lost rank
 * re-placed: `partial`), its placement hook (policy.ts).
 */
export function queuedConfig(
  parsed: unknown,
  worldSize: number,
  partial: boolean,
): { config: Record<string, unknown>; sample?: ReturnType<typeof firstRoundSample> } {
  const config = (parsed ?? {}) as Record<string, unknown>;
  const sample = partial ? undefined : firstRoundSample(config, worldSize);
  return sample ? { config, sample } : { config };
}

/** The placement hook of a sampled task's first round (policy.ts), or undefined when it samples nothing. */
export function firstRoundSample(
  config: Record<string, unknown>,
  worldSize: number,
):
  | { minAvailable: number; choose(eligible: readonly ClientCapacity[]): SampledPlacement[] | null }
  | undefined {
  const s = samplingOf(config as Partial<SamplingSettings>);
  if (!s) return undefined;
  const seed = typeof config.seed === 'number' ? config.seed : 0;
  return {
    minAvailable: s.min_available,
    choose: (eligible) => sampleRound(s, seed, 1, eligible, worldSize),
  };
}

/** One client of a round's sample, as its round_sampled event lists it. */
export interface SampledRank {
  client_id: string;
  rank: number;
  reason: string;
}

/** The task event recording who a round sampled and why (kind `round_sampled`). */
export function roundSampledEvent(
  taskId: number,
  at: string,
  round: number,
  method: string,
  eligible: number,
  sampled: readonly SampledRank[],
): { task_id: number; at: string; kind: string; message: string; data: unknown } {
  const who = sampled.map((s) => `${s.client_id} (rank ${s.rank})`).join(', ');
  return {
    task_id: taskId,
    at,
    kind: 'round_sampled',
    message: `round ${round}: ${method} sample of ${sampled.length} of ${eligible} eligible client(s): ${who}`,
    data: { round, method, eligible, sampled },
  };
}
