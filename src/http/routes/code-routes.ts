import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  CodeBundle,
  DigestParams,
  ListModelsQuery,
  ModelCode,
  ModelParams,
  ModelVersion,
  ModelVersionDetail,
  PushModelQuery,
} from '../../api/code.js';
import { ErrorBody, Page } from '../../api/common.js';
import type { TokenService } from '../../auth/token-service.js';
import type { CodeService } from '../../code/code-service.js';
import { AppError, unauthorized } from '../../errors.js';
import type { CodeKind } from '../../storage/schema.js';
import { sendModel } from '../../training/model-store/serve-file.js';
import { bearerToken, principalOf } from '../auth.js';

const people = { roles: ['admin', 'user'] as const };
const readers = { roles: ['admin', 'user', 'worker'] as const };
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };
const binary = { type: 'string', format: 'binary' } as const;

/** Content types that mean "the body is the tar.gz of a folder". */
const GZIP_TYPES = new Set([
  'application/gzip',
  'application/x-gzip',
  'application/x-tar+gzip',
  'application/tar+gzip',
]);

function bodyStream(req: FastifyRequest): Readable {
  const body = req.body as Readable | undefined;
  if (!body || typeof body.pipe !== 'function') {
    throw new AppError('unsupported_media_type', 'send the code as the request body', 415);
  }
  return body;
}

function contentLength(req: FastifyRequest): number | undefined {
  const v = req.headers['content-length'];
  return v === undefined ? undefined : Number(v);
}

function kindOf(req: FastifyRequest, asked: CodeKind | undefined): CodeKind {
  if (asked) return asked;
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  return GZIP_TYPES.has(type) ? 'folder' : 'file';
}

/** A refused body's unread rest is dropped rather than read (it may be large); the connection closes. */
async function refusingBody<T>(req: FastifyRequest, reply: FastifyReply, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const body = req.body as Readable | undefined;
    if (body && !body.readableEnded) void reply.header('connection', 'close');
    throw err;
  }
}

/** The model registry and code bundles on the API port (docs/api.md "Model registry"). */
export const codeRoutes =
  (code: CodeService): FastifyPluginAsyncTypebox =>
  async (app) => {
    // Code arrives as raw bytes of any type (a .py file, a tar.gz): streamed, never parsed.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

    app.put(
      '/api/models/:name/:version',
      {
        config: people,
        schema: {
          tags: ['models'],
          summary:
            'Push a model version: the file, or the tar.gz of a folder (immutable; same content is idempotent)',
          params: ModelParams,
          querystring: PushModelQuery,
          response: { 200: ModelVersion, 201: ModelVersion, ...errors, 413: ErrorBody, 415: ErrorBody },
        },
      },
      async (req, reply) =>
        refusingBody(req, reply, async () => {
          const r = await code.pushModel(principalOf(req), req.params.name, req.params.version, {
            body: bodyStream(req),
            kind: kindOf(req, req.query.kind),
            fileName: req.query.filename,
            contentLength: contentLength(req),
          });
          return reply.status(r.created ? 201 : 200).send(r.model);
        }),
    );
    app.get(
      '/api/models',
      {
        config: readers,
        schema: {
          tags: ['models'],
          summary: 'List model versions, newest first, each with the newest 10 tasks using it',
          querystring: ListModelsQuery,
          response: { 200: Page(ModelVersionDetail), ...errors },
        },
      },
      async (req) => code.list(req.query),
    );
    app.get(
      '/api/models/:name/:version',
      {
        config: readers,
        schema: {
          tags: ['models'],
          summary: 'A model version and the tasks using it',
          params: ModelParams,
          response: { 200: ModelVersionDetail, ...errors },
        },
      },
      async (req) => code.get(req.params.name, req.params.version),
    );
    app.delete(
      '/api/models/:name/:version',
      {
        config: people,
        schema: {
          tags: ['models'],
          summary: 'Delete a model version (refused while an unfinished task uses it)',
          params: ModelParams,
          response: { 204: { type: 'null' }, ...errors },
        },
      },
      async (req, reply) => {
        await code.delete(principalOf(req), req.params.name, req.params.version);
        return reply.status(204).send();
      },
    );
    app.post(
      '/api/bundles',
      {
        config: people,
        schema: {
          tags: ['models'],
          summary: "Push a code bundle (a folder's tar.gz), content-addressed; use its digest as config.code",
          response: { 200: CodeBundle, 201: CodeBundle, ...errors, 413: ErrorBody, 415: ErrorBody },
        },
      },
      async (req, reply) =>
        refusingBody(req, reply, async () => {
          const r = await code.pushBundle(principalOf(req), bodyStream(req), contentLength(req));
          return reply.status(r.created ? 201 : 200).send(r.bundle);
        }),
    );
    app.get(
      '/api/bundles/:digest',
      {
        config: readers,
        schema: {
          tags: ['models'],
          summary: 'Download code by digest (ETag and Range supported)',
          params: DigestParams,
          response: { 200: binary, ...errors },
        },
      },
      async (req, reply) => sendModel(req, reply, await code.blob(req.params.digest)),
    );
  };

/**
 * Who may read code on the model server: a worker, user or admin token in the Authorization
 * header or in `?token=` (the original's client puts it in URLs); nobody at all with
 * ALLOW_ANONYMOUS_CLIENTS, the original's trust model.
 */
function modelServerAuth(tokens: TokenService, allowAnonymous: boolean) {
  return async (req: FastifyRequest): Promise<void> => {
    const query = req.query as { token?: unknown } | undefined;
    const token =
      bearerToken(req.headers.authorization) ?? (typeof query?.token === 'string' ? query.token : null);
    if (!token) {
      if (allowAnonymous) return;
      throw unauthorized('missing token: send Authorization: Bearer <token> or ?token=<token>');
    }
    const principal = await tokens.authenticate(token);
    if (!principal) throw unauthorized('the token is not valid (unknown or revoked)');
    req.principal = principal;
  };
}

/** The registry on MODEL_SERVER_PORT, as the original's model server answered it. */
export const modelServerCodeRoutes =
  (code: CodeService, tokens: TokenService, allowAnonymous: boolean): FastifyPluginAsyncTypebox =>
  async (app) => {
    const auth = modelServerAuth(tokens, allowAnonymous);
    app.get(
      '/models/:name/:version',
      {
        config: { public: true },
        onRequest: auth,
        schema: { params: ModelParams, response: { 200: ModelCode, ...errors } },
      },
      async (req, reply) => {
        const m = await code.download(req.params.name, req.params.version);
        if (m.kind === 'file') return { name: m.name, version: m.version, code: m.code };
        void reply.header('x-ai-farm-digest', m.file.digest);
        return sendModel(req, reply, m.file);
      },
    );
    app.get(
      '/bundles/:digest',
      {
        config: { public: true },
        onRequest: auth,
        schema: { params: DigestParams, response: { 200: binary, ...errors } },
      },
      async (req, reply) => sendModel(req, reply, await code.blob(req.params.digest)),
    );
  };
