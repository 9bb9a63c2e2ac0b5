import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody } from '../../api/common.js';
import { databaseUnavailable } from '../../errors.js';
import type { Services } from '../services.js';

/** GET /health (the process is alive) and GET /ready (the database answers); no token needed. */
export const healthRoutes =
  (services: Services): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/health',
      {
        config: { public: true },
        schema: {
          tags: ['health'],
          security: [],
          response: { 200: Type.Object({ status: Type.Literal('ok') }) },
        },
      },
      async () => ({ status: 'ok' as const }),
    );
    app.get(
      '/ready',
      {
        config: { public: true },
        schema: {
          tags: ['health'],
          security: [],
          response: {
            200: Type.Object({ status: Type.Literal('ready'), database: Type.Literal('ok') }),
            503: ErrorBody,
          },
        },
      },
      async () => {
        try {
          await services.ping();
        } catch (err) {
          throw databaseUnavailable(err);
        }
        return { status: 'ready' as const, database: 'ok' as const };
      },
    );
  };
