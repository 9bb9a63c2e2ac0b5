import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody, IdParam } from '../../api/common.js';
import { CurrentRoundView, RoundView } from '../../training/training-api.js';
import type { TrainingService } from '../../training/training-service.js';
import { principalOf } from '../auth.js';

/** Workers may read the rounds of tasks their clients hold (checked by TrainingService). */
const readers = { roles: ['admin', 'user', 'worker'] as const };
const errors = { 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** The round journal of a training task: GET /api/tasks/{id}/rounds and /rounds/current. */
export const trainingRoutes =
  (training: TrainingService): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/tasks/:id/rounds',
      {
        config: readers,
        schema: {
          tags: ['training'],
          summary: "A training task's rounds, oldest first",
          params: IdParam,
          response: { 200: Type.Object({ items: Type.Array(RoundView) }), ...errors },
        },
      },
      async (req) => ({ items: await training.rounds(principalOf(req), req.params.id) }),
    );
    app.get(
      '/api/tasks/:id/rounds/current',
      {
        config: readers,
        schema: {
          tags: ['training'],
          summary: 'The open round (or the last one) with the ranks accepted so far',
          params: IdParam,
          response: { 200: CurrentRoundView, ...errors },
        },
      },
      async (req) => training.current(principalOf(req), req.params.id),
    );
  };
