import { Type, type TSchema } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { ErrorBody, IdParam, Page } from '../../api/common.js';
import {
  AssignmentView,
  ChangeTaskStatusBody,
  CreatedTaskBatch,
  CreateTaskBatchBody,
  CreateTaskBody,
  ListTasksQuery,
  Task,
  TaskEvent,
  TaskEventsQuery,
  TaskLogLine,
  TaskLogsQuery,
  TaskMetricsView,
} from '../../api/tasks.js';
import { fromOriginalBody, isOriginalTaskBody } from '../../compat/original-task-body.js';
import { AppError } from '../../errors.js';
import { principalOf } from '../auth.js';
import type { Services } from '../services.js';

const people = { roles: ['admin', 'user'] as const };
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/**
 * A people's route about one task (`:id`): its OpenAPI summary, what it answers (the common
 * errors added) and any more of its schema (body, querystring).
 */
function aboutTask<R extends Record<number, TSchema>, S extends object = object>(
  summary: string,
  response: R,
  more?: S,
) {
  return {
    config: people,
    schema: {
      tags: ['tasks'],
      summary,
      params: IdParam,
      ...(more as S),
      response: { ...response, ...errors },
    },
  };
}

/** What reading the original AI Farm's task bodies needs of this server. */
export interface OriginalBodySettings {
  modelServerPort: () => number;
  /** SERVER_HOST: a model url naming it points at this server. */
  serverHost: string;
  defaultEpochs: number;
  defaultBatchSize: number;
}

/**
 * Reads the original AI Farm's flat task body (and each such item of a batch) into ours
 * before validation, so the schema and its error messages stay ours.
 */
function originalBodies(settings: OriginalBodySettings, batch: boolean) {
  return async (req: FastifyRequest): Promise<void> => {
    const hosts = ['localhost', '127.0.0.1', '::1', req.hostname.toLowerCase()];
    if (settings.serverHost !== '0.0.0.0' && settings.serverHost !== '::')
      hosts.push(settings.serverHost.toLowerCase());
    const ctx = { ...settings, modelServerPort: settings.modelServerPort(), hosts };
    const convert = (body: unknown, where: string): unknown => {
      if (!isOriginalTaskBody(body)) return body;
      const r = fromOriginalBody(body, ctx);
      if (!r.ok) throw new AppError(r.error.code, `${where}${r.error.message}`, r.error.status);
      return r.body;
    };
    const body = req.body as { tasks?: unknown } | undefined;
    if (!batch) req.body = convert(body, '');
    else if (body && Array.isArray(body.tasks))
      req.body = { ...body, tasks: body.tasks.map((t, i) => convert(t, `tasks[${i}]: `)) };
  };
}

/** The seed's task endpoints, plus the task's events. */
export const taskRoutes =
  (services: Services, original: OriginalBodySettings): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/tasks',
      {
        config: people,
        schema: {
          tags: ['tasks'],
          summary: 'List tasks',
          querystring: ListTasksQuery,
          response: { 200: Page(Task), ...errors },
        },
      },
      async (req) => services.tasks.list(principalOf(req), req.query),
    );
    app.post(
      '/api/tasks',
      {
        config: people,
        preValidation: originalBodies(original, false),
        schema: {
          tags: ['tasks'],
          summary: 'Create a task',
          description:
            "Also accepts the original AI Farm's flat body (url, version, batch_size, epochs, distributed, n_clients, ...): see docs/coming-from-original.md.",
          body: CreateTaskBody,
          response: { 201: Task, ...errors },
        },
      },
      async (req, reply) => reply.status(201).send(await services.tasks.create(principalOf(req), req.body)),
    );
    app.post(
      '/api/tasks/batch',
      {
        config: people,
        preValidation: originalBodies(original, true),
        schema: {
          tags: ['tasks'],
          summary: 'Create up to 1,000 tasks in one transaction',
          body: CreateTaskBatchBody,
          response: { 201: CreatedTaskBatch, ...errors },
        },
      },
      async (req, reply) =>
        reply.status(201).send({ ids: await services.tasks.createMany(principalOf(req), req.body.tasks) }),
    );
    app.get('/api/tasks/:id', aboutTask('Get a task', { 200: Task }), async (req) =>
      services.tasks.get(principalOf(req), req.params.id),
    );
    app.put(
      '/api/tasks/:id/status',
      aboutTask(
        'Change a task status (pause, resume, cancel, retry)',
        { 200: Task },
        { body: ChangeTaskStatusBody },
      ),
      async (req) => services.tasks.changeStatus(principalOf(req), req.params.id, req.body.status),
    );
    app.delete(
      '/api/tasks/:id',
      aboutTask('Delete a task (stopping its clients first)', { 204: Type.Null() }),
      async (req, reply) => {
        await services.tasks.delete(principalOf(req), req.params.id);
        return reply.status(204).send(null);
      },
    );
    app.get(
      '/api/tasks/:id/events',
      aboutTask(
        "A task's events, newest first (a page: `limit`, then `before` the last id)",
        { 200: Type.Object({ items: Type.Array(TaskEvent) }) },
        { querystring: TaskEventsQuery },
      ),
      async (req) => ({ items: await services.tasks.events(principalOf(req), req.params.id, req.query) }),
    );
    app.get(
      '/api/tasks/:id/metrics',
      aboutTask("A task's progress and metrics history", { 200: TaskMetricsView }),
      async (req) => services.tasks.metrics(principalOf(req), req.params.id),
    );
    app.get(
      '/api/tasks/:id/assignments',
      aboutTask('Every attempt at every rank of a task', {
        200: Type.Object({ items: Type.Array(AssignmentView) }),
      }),
      async (req) => ({ items: await services.tasks.assignments(principalOf(req), req.params.id) }),
    );
    app.get(
      '/api/tasks/:id/logs',
      aboutTask(
        "A task's output lines as workers sent them (newest 2,000 kept)",
        { 200: Type.Object({ items: Type.Array(TaskLogLine) }) },
        { querystring: TaskLogsQuery },
      ),
      async (req) => ({ items: await services.tasks.logs(principalOf(req), req.params.id, req.query.limit) }),
    );
  };
