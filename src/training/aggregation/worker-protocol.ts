/** Messages between the aggregation runners and their worker threads (structured-clone data only). */
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { SliceSetup } from './fedavg-slice.js';
import type { OutputPart } from './parallel-output.js';
import type { RobustChunkRequest, RobustSliceSetup } from './robust-slice.js';
import type { AggregateJob } from './types.js';

/** What a worker is started with. */
export type WorkerData =
  | { mode: 'job'; job: AggregateJob }
  | { mode: 'slice'; setup: SliceSetup }
  | { mode: 'robust'; setup: RobustSliceSetup };

/** A request to a robust thread, before the pool numbers it. */
export type RobustCall = ({ op: 'chunk' } & RobustChunkRequest) | { op: 'distances' };

/** A request to a FedAvg slice thread, before the session numbers it. */
export type SliceCall =
  | { op: 'scan'; path: string }
  | { op: 'add'; path: string; weight: number }
  | { op: 'finishPart'; tmpPath: string; out: SafetensorsHeader; part: OutputPart; totalWeight: number };

/** A numbered request to a slice thread. */
export type SliceRequest = SliceCall & { id: number };

/** A reply: the value of the request `id` (0 for a job), or an unexpected error. */
export type WorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { message: string; stack?: string } };
