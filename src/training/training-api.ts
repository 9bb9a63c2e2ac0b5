/** HTTP views of the round journal (docs/training.md, "Round state for workers and users"). */
import { Type, type Static } from '@sinclair/typebox';
import { NullableTimestamp, Timestamp } from '../api/common.js';
import { RoundTrained } from '../api/tasks.js';

export const RoundView = Type.Object({
  round: Type.Integer(),
  state: Type.Union([Type.Literal('open'), Type.Literal('closed')]),
  opened_at: Timestamp,
  deadline_at: Timestamp,
  closed_at: NullableTimestamp,
  num_updates: Type.Integer({ description: 'Updates aggregated (closed rounds) or accepted so far (open).' }),
  global_digest: Type.Union([Type.String(), Type.Null()], {
    description:
      'Digest of the global model this round starts from (sha256 over 4 MiB pieces, docs/protocol.md; null in round 1).',
  }),
  metrics: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], {
    description:
      "Closed rounds: the ranks' metrics weighted by samples, plus heldout_* for train_mnist and refused_late (late updates refused) for tasks with over_select.",
  }),
  trained: RoundTrained,
});
export type RoundView = Static<typeof RoundView>;

export const CurrentRoundView = Type.Composite([
  RoundView,
  Type.Object({
    rounds: Type.Integer(),
    accepted_ranks: Type.Array(Type.Integer()),
    quorum: Type.Integer(),
    world_size: Type.Integer(),
    mode: Type.Union([Type.Literal('sync'), Type.Literal('async')]),
    refused_stale: Type.Integer({
      description: 'Async: updates refused so far as staler than max_staleness (409 stale_update).',
    }),
  }),
]);
export type CurrentRoundView = Static<typeof CurrentRoundView>;

export const RoundParams = Type.Object({
  id: Type.Integer({ minimum: 1, description: 'Task id.' }),
  round: Type.Integer({ minimum: 1 }),
});

export const UpdateParams = Type.Object({
  id: Type.Integer({ minimum: 1, description: 'Task id.' }),
  round: Type.Integer({ minimum: 1 }),
  rank: Type.Integer({ minimum: 0 }),
});

/**
 * Largest `num_samples` an upload may report. Sample counts are self-reported weights: bounded,
 * a sum of them over any world size stays an exact float64 integer and far from overflow.
 */
export const MAX_NUM_SAMPLES = 1_000_000_000;

/** A resumable (tus) upload of a rank's update. */
export const ResumableParams = Type.Object({
  id: Type.Integer({ minimum: 1, description: 'Task id.' }),
  round: Type.Integer({ minimum: 1 }),
  rank: Type.Integer({ minimum: 0 }),
  upload: Type.String({ maxLength: 64, description: 'Upload id (the end of the Location of its creation).' }),
});

export const UpdateQuery = Type.Object(
  {
    attempt: Type.Integer({ minimum: 1, description: 'The lease attempt of the `task` message.' }),
    num_samples: Type.Integer({
      minimum: 1,
      maximum: MAX_NUM_SAMPLES,
      description: `FedAvg weight: samples trained on, an integer from 1 to ${MAX_NUM_SAMPLES}.`,
    }),
  },
  { additionalProperties: false },
);

export const UploadAccepted = Type.Object({
  accepted: Type.Optional(Type.Boolean()),
  duplicate: Type.Optional(Type.Boolean()),
  digest: Type.String({
    description: 'Digest of the stored update (sha256 over 4 MiB pieces, docs/protocol.md).',
  }),
  bytes: Type.Integer(),
});
