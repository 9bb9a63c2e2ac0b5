import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody } from '../../api/common.js';
import type { Services } from '../services.js';

const SeedMetricsSchema = {
  cpu_utilization: Type.Number({ description: 'Percent.' }),
  ram_utilization: Type.Number({ description: 'Percent.' }),
  gpu_utilization: Type.Array(
    Type.Object({
      id: Type.Union([Type.Integer(), Type.String()]),
      utilization: Type.Number(),
      memory_used: Type.Number({ description: 'MB' }),
      client_id: Type.Optional(Type.String()),
    }),
  ),
  active_tasks: Type.Integer(),
  connected_clients: Type.Integer(),
};

const Overview = Type.Object({
  ...SeedMetricsSchema,
  farm: Type.Object(SeedMetricsSchema, { description: "The workers' figures, from their heartbeats." }),
  tasks_by_status: Type.Record(Type.String(), Type.Integer()),
});

/** GET /api/metrics (the seed's metrics object) and GET /metrics (Prometheus). */
export const metricsRoutes =
  (services: Services): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/metrics',
      {
        config: { roles: ['admin', 'user'] },
        schema: {
          tags: ['monitoring'],
          summary: "The seed's metrics object for the server host, and `farm` for the workers",
          response: { 200: Overview, 401: ErrorBody, 403: ErrorBody },
        },
      },
      async () => services.monitoring.overview(),
    );
    app.get(
      '/metrics',
      {
        config: { roles: ['admin', 'user'] },
        schema: { tags: ['monitoring'], summary: 'Prometheus metrics (text format)' },
      },
      async (_req, reply) => {
        const { contentType, body } = await services.monitoring.prometheus();
        return reply.type(contentType).send(body);
      },
    );
  };
