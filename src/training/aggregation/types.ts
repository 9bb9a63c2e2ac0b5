/**
 * Aggregation job and result types, shared by the in-process driver, the worker thread and
 * the runner (everything here is structured-clone friendly).
 */
import type { SafetensorsHeader } from '../safetensors/header.js';

/** One stored update and its FedAvg weight (typically the client's num_samples). */
export interface AggregateInput {
  path: string;
  /** Weight for FedAvg/FedProx (> 0, finite). Ignored by the robust strategies, which are unweighted. */
  weight: number;
}

/**
 * A strategy and its parameters.
 * - fedavg: weighted mean.
 * - fedprox: the same server-side weighted mean; `mu` is the clients' proximal coefficient,
 *   carried so the round can hand it to clients.
 * - median: coordinate-wise median.
 * - trimmed_mean: drops `trim` (or floor(beta * n)) values from each end per coordinate.
 * - krum / multi_krum: `f` assumed Byzantine updates; multi_krum averages the `m` best-scored.
 */
export type StrategySpec =
  | { strategy: 'fedavg'; params?: Record<string, never> }
  | { strategy: 'fedprox'; params: { mu: number } }
  | { strategy: 'median'; params?: Record<string, never> }
  | { strategy: 'trimmed_mean'; params: { beta: number; trim?: never } | { trim: number; beta?: never } }
  | { strategy: 'krum'; params: { f: number } }
  | { strategy: 'multi_krum'; params: { f: number; m: number } };

/** Name of a strategy. */
export type StrategyName = StrategySpec['strategy'];

/** Tuning shared by all strategies. */
export interface ChunkOptions {
  /**
   * Elements per chunk and per update. Default: 256 Ki elements (1 MiB of float32) for FedAvg;
   * for the robust strategies, as many as keep N x chunk within 64 MiB, between 16 Ki and 1 Mi.
   */
  chunkElements?: number;
  /**
   * Threads for the robust strategies, each taking a share of every chunk. Default: the
   * machine's available parallelism (fewer for small models); 1 runs in the calling thread.
   */
  threads?: number;
}

/** A whole aggregation: strategy, stored updates, global model header and output path. */
export type AggregateJob = StrategySpec &
  ChunkOptions & {
    inputs: AggregateInput[];
    /** Header of the global model: fixes names, shapes, dtypes and order of the output. */
    globalHeader: SafetensorsHeader;
    outPath: string;
    /** Metadata of the output file. Default: the global model's. */
    metadata?: Record<string, string>;
  };

/** An input left out of the aggregate, and why. */
export interface RejectedInput {
  index: number;
  code: 'invalid_header' | 'incompatible' | 'non_finite' | 'invalid_weight';
  message: string;
  tensor?: string;
}

/** A successful aggregation. */
export interface AggregateResult {
  ok: true;
  outPath: string;
  /** sha256 of the output file, hex. */
  digest: string;
  /** Body bytes read from the inputs, every pass included. */
  bytesRead: number;
  /** Wall time of the aggregation. */
  ms: number;
  /** Indices of the inputs that went into the result. */
  used: number[];
  rejected: RejectedInput[];
  /** Krum: score of each candidate input (by input index; absent for rejected inputs). */
  scores?: Record<number, number>;
}

/** Stable codes of a failed aggregation. */
export type AggregationFailureCode = 'unsupported_dtype' | 'invalid_params' | 'no_inputs' | 'too_few_inputs';

/** An aggregation that produced no output. */
export interface AggregationFailure {
  ok: false;
  code: AggregationFailureCode;
  message: string;
  rejected?: RejectedInput[];
}

/** Result of an aggregation. */
export type AggregateOutcome = AggregateResult | AggregationFailure;
