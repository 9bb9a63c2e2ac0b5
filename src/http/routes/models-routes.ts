import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox, Static, TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
} from 'fastify';
import { ErrorBody, IdParam } from '../../api/common.js';
import { jsonTooDeep, tooDeepMessage } from '../../api/json-depth.js';
import type { AuthFailures } from '../../auth/auth-failures.js';
import type { TokenService } from '../../auth/token-service.js';
import { AppError, badRequest } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import type { UploadMeta, UploadService } from '../../training/coordinator/uploads.js';
import { sendModel } from '../../training/model-store/serve-file.js';
import { RoundParams, UpdateParams, UpdateQuery, UploadAccepted } from '../../training/training-api.js';
import type { TrainingService } from '../../training/training-service.js';
import { authHook, principalOf } from '../auth.js';
import { errorHandler, formatValidationErrors } from '../errors.js';
import { headerDeadline } from '../header-deadline.js';
import { schemaCompiler } from '../validators.js';

/** Model downloads: users (their tasks), admins, and workers (tasks their clients hold). */
const readers = { roles: ['admin', 'user', 'worker'] as const };
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };
const binary = { 200: { type: 'string', format: 'binary' } } as const;

/** A refused upload's unread rest up to this size is read and dropped rather than cutting the connection. */
const DRAIN_LIMIT_BYTES = 16 * 1024 * 1024;

/** Largest X-AI-Farm-Metrics header read. */
const MAX_METRICS_CHARS = 8192;

/** X-AI-Farm-Metrics parsed (400 `invalid_metrics` when it is not a JSON object). */
export function parseMetrics(header: string | string[] | undefined): Record<string, unknown> | null {
  if (header === undefined) return null;
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text.length > MAX_METRICS_CHARS) throw badRequest('invalid_metrics', 'X-AI-Farm-Metrics is too long');
  if (jsonTooDeep(text)) throw badRequest('too_deep', tooDeepMessage('X-AI-Farm-Metrics'));
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw badRequest('invalid_metrics', 'X-AI-Farm-Metrics must be a JSON object, e.g. {"loss":0.3}');
}

/** The X-AI-Farm-Client an upload names (400 `missing_client` without one). */
export function uploaderOf(req: FastifyRequest): string {
  const clientId = req.headers['x-ai-farm-client'];
  if (typeof clientId !== 'string' || clientId === '') {
    throw badRequest('missing_client', 'send X-AI-Farm-Client: <client id>');
  }
  return clientId;
}

/** Who uploads what, from an upload route's path, query and headers (a PUT's or a tus creation's). */
export function uploadMeta(
  req: FastifyRequest & { params: Static<typeof UpdateParams>; query: Static<typeof UpdateQuery> },
  clientId: string,
): UploadMeta {
  return {
    taskId: req.params.id,
    round: req.params.round,
    rank: req.params.rank,
    attempt: req.query.attempt,
    numSamples: req.query.num_samples,
    clientId,
    principal: principalOf(req),
    metrics: parseMetrics(req.headers['x-ai-farm-metrics']),
  };
}

/** GET routes of the model store, mounted at `prefix` ('/api' on SERVER_PORT, '' on MODEL_SERVER_PORT). */
const modelDownloads =
  (training: TrainingService, prefix: string): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      `${prefix}/tasks/:id/rounds/:round/model`,
      {
        config: readers,
        schema: {
          tags: ['training'],
          summary: 'The global model a round starts from (safetensors; ETag and Range supported)',
          params: RoundParams,
          response: { ...binary, ...errors },
        },
      },
      async (req, reply) =>
        sendModel(req, reply, await training.roundModel(principalOf(req), req.params.id, req.params.round)),
    );
    app.get(
      `${prefix}/tasks/:id/model`,
      {
        config: readers,
        schema: {
          tags: ['training'],
          summary: "A finished training task's final model (safetensors; ETag and Range supported)",
          params: IdParam,
          response: { ...binary, ...errors },
        },
      },
      async (req, reply) => sendModel(req, reply, await training.finalModel(principalOf(req), req.params.id)),
    );
  };

/** The model store on the API port: uploads (PUT) and downloads. */
export const modelRoutes =
  (training: TrainingService, uploads: UploadService): FastifyPluginAsyncTypebox =>
  async (app) => {
    // Updates stream straight to disk: the body reaches the handler unread, never buffered.
    app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    await app.register(modelDownloads(training, '/api'));
    app.put(
      '/api/tasks/:id/rounds/:round/updates/:rank',
      {
        config: { roles: ['worker', 'admin'] as const },
        schema: {
          tags: ['training'],
          summary: "Upload a rank's update (safetensors body, application/octet-stream)",
          params: UpdateParams,
          querystring: UpdateQuery,
          response: { 200: UploadAccepted, 201: UploadAccepted, ...errors, 413: ErrorBody },
        },
      },
      async (req, reply) => {
        const body = req.body as Readable | undefined;
        try {
          const clientId = uploaderOf(req);
          if (!body || typeof body.pipe !== 'function') {
            throw new AppError('unsupported_media_type', 'send the update as application/octet-stream', 415);
          }
          const length = req.headers['content-length'];
          const answer = await uploads.receive({
            ...uploadMeta(req, clientId),
            contentLength: length === undefined ? undefined : Number(length),
            body,
          });
          return reply.status(answer.status).send(answer.body);
        } catch (err) {
          // Refused before the whole body was read: a small rest is read and dropped so the
          // client gets a clean answer on a live connection; a large one is not worth reading.
          // `body` is a stream only when it came as application/octet-stream; any other
          // content type was parsed (or refused) by Fastify and has nothing left to drain.
          if (body && typeof body.pipe === 'function' && !body.readableEnded) {
            const declared = Number(req.headers['content-length']);
            if (declared <= DRAIN_LIMIT_BYTES) {
              body.removeAllListeners('readable');
              body.resume();
            } else void reply.header('connection', 'close');
          }
          throw err;
        }
      },
    );
  };

/**
 * The model server on MODEL_SERVER_PORT: the same downloads at /tasks/{id}/rounds/{r}/model and
 * /tasks/{id}/model, with the same bearer-token auth, and the model registry's
 * /models/{name}/{version} (code-routes.ts).
 */
export async function buildModelServer(d: {
  tokens: TokenService;
  /** Failed token checks per address: past MAX_AUTH_FAILURES, refused before the token is read. */
  authFailures: AuthFailures;
  training: TrainingService;
  logger: Logger;
  /** HEADERS_TIMEOUT, seconds. */
  headersTimeout: number;
  /** More routes served here (the model registry: code-routes.ts). */
  plugins?: FastifyPluginAsyncTypebox[];
}): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: d.logger.child({ component: 'model-server' }) as FastifyBaseLogger,
    http: headerDeadline(d.headersTimeout),
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(schemaCompiler());
  app.setSchemaErrorFormatter((errors, part) => formatValidationErrors(errors, part));
  app.setErrorHandler(errorHandler(d.logger));
  app.setNotFoundHandler((req) => {
    throw new AppError('route_not_found', `no route ${req.method} ${req.url.split('?')[0]}`, 404);
  });
  const auth = authHook(d.tokens);
  app.addHook('onRequest', async (req, reply) => {
    if (d.authFailures.retryAfter(req.ip) > 0) {
      void reply.header('retry-after', String(d.authFailures.retryAfter(req.ip)));
      throw new AppError('too_many_auth_failures', d.authFailures.describe(req.ip), 429);
    }
    await auth(req, reply);
  });
  // Every 401 counts, whichever route's check gave it (the registry's routes check `?token=` too).
  app.addHook('onResponse', async (req, reply) => {
    if (reply.statusCode === 401) d.authFailures.record(req.ip);
  });
  await app.register(modelDownloads(d.training, ''));
  for (const p of d.plugins ?? []) await app.register(p);
  return app as unknown as FastifyInstance;
}
