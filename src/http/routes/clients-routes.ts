import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody, Page, StringIdParam } from '../../api/common.js';
import { ChangeClientStatusBody, Client, ListClientsQuery } from '../../api/clients.js';
import { principalOf } from '../auth.js';
import type { Services } from '../services.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** The seed's client endpoints. Users may look; only admins cordon. */
export const clientRoutes =
  (services: Services): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/clients',
      {
        config: { roles: ['admin', 'user'] },
        schema: {
          tags: ['clients'],
          summary: 'List clients',
          querystring: ListClientsQuery,
          response: { 200: Page(Client), ...errors },
        },
      },
      async (req) => services.clients.list(req.query),
    );
    app.get(
      '/api/clients/:id',
      {
        config: { roles: ['admin', 'user'] },
        schema: {
          tags: ['clients'],
          summary: 'Get a client',
          params: StringIdParam,
          response: { 200: Client, ...errors },
        },
      },
      async (req) => services.clients.get(req.params.id),
    );
    app.put(
      '/api/clients/:id/status',
      {
        config: { roles: ['admin'] },
        schema: {
          tags: ['clients'],
          summary: 'Cordon ("inactive") or uncordon ("active") a client',
          params: StringIdParam,
          body: ChangeClientStatusBody,
          response: { 200: Client, ...errors },
        },
      },
      async (req) => services.clients.setStatus(req.params.id, req.body.status, principalOf(req).name),
    );
  };
