/** Messages between the aggregation runner and its worker thread (structured-clone data only). */
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { AccumulatorOptions } from './fedavg.js';
import type { AggregateJob } from './types.js';

/** What a worker is started with. */
export type WorkerData =
  | { mode: 'job'; job: AggregateJob }
  | { mode: 'session'; header: SafetensorsHeader; options: AccumulatorOptions & { sum: SharedArrayBuffer } };

/** A request to a session worker. */
export type SessionRequest =
  | { id: number; op: 'add'; path: string; weight: number; verified?: boolean }
  | { id: number; op: 'finish'; outPath: string; metadata?: Record<string, string> };

/** A session request before the runner numbers it. */
export type SessionCall =
  | { op: 'add'; path: string; weight: number; verified?: boolean }
  | { op: 'finish'; outPath: string; metadata?: Record<string, string> };

/** A reply: the value of the request `id` (0 for a job), or an unexpected error. */
export type WorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { message: string; stack?: string } };
