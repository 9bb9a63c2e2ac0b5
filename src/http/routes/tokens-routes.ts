import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody, StringIdParam } from '../../api/common.js';
import { CreateTokenBody, CreatedToken, ListTokensQuery, TokenView } from '../../api/tokens.js';
import { principalOf } from '../auth.js';
import type { Services } from '../services.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** API tokens: admins only. */
export const tokenRoutes =
  (services: Services): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/tokens',
      {
        schema: {
          tags: ['tokens'],
          summary: 'List tokens (never their secrets)',
          querystring: ListTokensQuery,
          response: { 200: Type.Object({ items: Type.Array(TokenView) }), ...errors },
        },
      },
      async (req) => ({ items: await services.tokens.list(req.query.include_revoked ?? false) }),
    );
    app.post(
      '/api/tokens',
      {
        schema: {
          tags: ['tokens'],
          summary: 'Create a token; its secret is in this answer only',
          body: CreateTokenBody,
          response: { 201: CreatedToken, ...errors },
        },
      },
      async (req, reply) => {
        const { token, view } = await services.tokens.create(
          req.body.name,
          req.body.role,
          principalOf(req).name,
        );
        return reply.status(201).send({ ...view, token });
      },
    );
    app.delete(
      '/api/tokens/:id',
      {
        schema: {
          tags: ['tokens'],
          summary: 'Revoke a token',
          params: StringIdParam,
          response: { 200: TokenView, ...errors },
        },
      },
      async (req) => services.tokens.revoke(req.params.id, principalOf(req).name),
    );
  };
