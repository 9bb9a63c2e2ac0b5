import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody } from '../../api/common.js';
import { ChangePasswordBody, CreateUserBody, UserIdParam, UserView } from '../../api/session.js';
import type { UserService } from '../../auth/user-service.js';
import { principalOf } from '../auth.js';
import type { SessionAuth } from '../session-auth.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** Admin-panel users: admins only (the default role rule). */
export const usersRoutes =
  (deps: { users: UserService; auth: SessionAuth }): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/users',
      {
        schema: {
          tags: ['users'],
          summary: 'List admin-panel users',
          response: { 200: Type.Object({ items: Type.Array(UserView) }), ...errors },
        },
      },
      async () => ({ items: await deps.users.list() }),
    );
    app.post(
      '/api/users',
      {
        schema: {
          tags: ['users'],
          summary: 'Add an admin-panel user',
          body: CreateUserBody,
          response: { 201: UserView, ...errors },
        },
      },
      async (req, reply) =>
        reply
          .status(201)
          .send(await deps.users.create(req.body.username, req.body.password, principalOf(req).name)),
    );
    app.put(
      '/api/users/:id/password',
      {
        schema: {
          tags: ['users'],
          summary: "Change a user's password; ends that user's other sessions",
          params: UserIdParam,
          body: ChangePasswordBody,
          response: { 200: UserView, ...errors },
        },
      },
      async (req) =>
        deps.users.changePassword(req.params.id, req.body.password, principalOf(req), {
          currentPassword: req.body.current_password,
          keepSessionId: deps.auth.of(req)?.session.id,
        }),
    );
    app.delete(
      '/api/users/:id',
      {
        schema: {
          tags: ['users'],
          summary: 'Delete a user (not yourself, not the last one)',
          params: UserIdParam,
          response: { 204: Type.Null(), ...errors },
        },
      },
      async (req, reply) => {
        await deps.users.delete(req.params.id, principalOf(req));
        return reply.status(204).send(null);
      },
    );
  };
