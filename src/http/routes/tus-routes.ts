/**
 * tus 1.0 (tus.io: core, creation, checksum, expiration, termination) on a rank's update URL:
 * POST creates an upload (Upload-Length), HEAD gives its offset, PATCH appends from it, DELETE
 * drops it. The plain PUT of models-routes.ts stays. Thin: headers in, one service call, headers out.
 */
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { ErrorBody } from '../../api/common.js';
import { AppError, badRequest } from '../../errors.js';
import type { ResumableUploads } from '../../training/coordinator/resumable.js';
import { CHECKSUM_ALGORITHMS, type ChecksumAlgorithm } from '../../training/model-store/receive-part.js';
import { ResumableParams, UpdateParams, UpdateQuery, UploadAccepted } from '../../training/training-api.js';
import { principalOf } from '../auth.js';
import { uploaderOf, uploadMeta } from './models-routes.js';

const TUS_VERSION = '1.0.0';
const EXTENSIONS = 'creation,checksum,expiration,termination';
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };
const uploaders = { roles: ['worker', 'admin'] as const };

/** A header's single value. */
function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** A non-negative integer header, or a 400 naming it. */
function integerHeader(name: string, v: string | string[] | undefined): number {
  const text = header(v);
  if (text === undefined)
    throw badRequest(`missing_${name.toLowerCase().replace(/-/g, '_')}`, `send ${name}`);
  if (!/^\d{1,16}$/.test(text)) throw badRequest('invalid_header', `${name} must be a non-negative integer`);
  return Number(text);
}

/** Upload-Checksum: `<algorithm> <base64 digest>`. */
function parseChecksum(
  v: string | string[] | undefined,
): { algorithm: ChecksumAlgorithm; expected: Buffer } | null {
  const text = header(v);
  if (text === undefined) return null;
  const [algorithm, b64, extra] = text.trim().split(/\s+/);
  if (!(CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm ?? '')) {
    throw badRequest(
      'unsupported_checksum_algorithm',
      `Upload-Checksum algorithm must be one of ${CHECKSUM_ALGORITHMS.join(', ')}`,
    );
  }
  if (!b64 || extra !== undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) {
    throw badRequest('invalid_checksum', 'Upload-Checksum must be "<algorithm> <base64 digest>"');
  }
  return { algorithm: algorithm as ChecksumAlgorithm, expected: Buffer.from(b64, 'base64') };
}

/** An answer without a body (tus answers in headers); untyped, as no body schema applies. */
function bare(reply: unknown, status: number): FastifyReply {
  return (reply as FastifyReply).status(status);
}

/** Tus-Resumable must name the version served (412 otherwise, as the protocol says). */
function checkVersion(v: string | string[] | undefined, reply: FastifyReply): void {
  if (header(v) === TUS_VERSION) return;
  void reply.header('tus-version', TUS_VERSION);
  throw new AppError('tus_version', `send Tus-Resumable: ${TUS_VERSION}`, 412);
}

export const tusRoutes =
  (uploads: ResumableUploads, maxUploadBytes: number): FastifyPluginAsyncTypebox =>
  async (app) => {
    // PATCH bodies stream to disk: they reach the handler unread.
    app.addContentTypeParser('application/offset+octet-stream', (_req, payload, done) => done(null, payload));
    app.addHook('onSend', async (_req, reply) => {
      void reply.header('tus-resumable', TUS_VERSION);
    });
    const base = '/api/tasks/:id/rounds/:round/updates/:rank';
    const one = `${base}/uploads/:upload`;

    app.options(
      base,
      {
        config: { public: true },
        schema: {
          tags: ['training'],
          summary: 'tus: the protocol version, extensions and limits served',
          params: UpdateParams,
        },
      },
      async (_req, reply) =>
        reply
          .status(204)
          .header('tus-version', TUS_VERSION)
          .header('tus-extension', EXTENSIONS)
          .header('tus-max-size', String(maxUploadBytes))
          .header('tus-checksum-algorithm', CHECKSUM_ALGORITHMS.join(','))
          .send(),
    );

    app.post(
      base,
      {
        config: uploaders,
        schema: {
          tags: ['training'],
          summary: "tus creation: start a resumable upload of a rank's update (Upload-Length)",
          params: UpdateParams,
          querystring: UpdateQuery,
          response: { 200: UploadAccepted, ...errors, 412: ErrorBody, 413: ErrorBody },
        },
      },
      async (req, reply) => {
        checkVersion(req.headers['tus-resumable'], reply);
        if (req.headers['upload-defer-length'] !== undefined) {
          throw badRequest(
            'defer_length_unsupported',
            'send Upload-Length; Upload-Defer-Length is not supported',
          );
        }
        const made = await uploads.create({
          ...uploadMeta(req, uploaderOf(req)),
          length: integerHeader('Upload-Length', req.headers['upload-length']),
        });
        if ('duplicate' in made) return reply.status(made.duplicate.status).send(made.duplicate.body);
        const { id, round, rank } = req.params;
        return bare(reply, 201)
          .header('location', `/api/tasks/${id}/rounds/${round}/updates/${rank}/uploads/${made.id}`)
          .header('upload-expires', made.expiresAt.toUTCString())
          .send();
      },
    );

    const address = (p: { id: number; round: number; rank: number; upload: string }) => ({
      taskId: p.id,
      round: p.round,
      rank: p.rank,
      uploadId: p.upload,
    });

    app.route({
      method: 'HEAD',
      url: one,
      config: uploaders,
      schema: {
        tags: ['training'],
        summary: 'tus: the offset of an upload (Upload-Offset)',
        params: ResumableParams,
      },
      handler: async (req, reply) => {
        checkVersion(req.headers['tus-resumable'], reply);
        const s = await uploads.status(principalOf(req), address(req.params));
        return reply
          .status(200)
          .header('upload-offset', String(s.received))
          .header('upload-length', String(s.length))
          .header('upload-expires', s.expiresAt.toUTCString())
          .header('cache-control', 'no-store')
          .send();
      },
    });

    app.patch(
      one,
      {
        config: uploaders,
        schema: {
          tags: ['training'],
          summary: 'tus: append bytes at Upload-Offset (application/offset+octet-stream)',
          params: ResumableParams,
          response: { ...errors, 410: ErrorBody, 412: ErrorBody, 423: ErrorBody, 460: ErrorBody },
        },
      },
      async (req, reply) => {
        const body = req.body as Readable | undefined;
        try {
          checkVersion(req.headers['tus-resumable'], reply);
          if (!body || typeof body.pipe !== 'function') {
            throw new AppError(
              'unsupported_media_type',
              'send Content-Type: application/offset+octet-stream',
              415,
            );
          }
          const s = await uploads.patch({
            principal: principalOf(req),
            address: address(req.params),
            clientId: header(req.headers['x-ai-farm-client']),
            offset: integerHeader('Upload-Offset', req.headers['upload-offset']),
            checksum: parseChecksum(req.headers['upload-checksum']),
            body,
          });
          bare(reply, 204)
            .header('upload-offset', String(s.received))
            .header('upload-expires', s.expiresAt.toUTCString());
          if (s.accepted) {
            void reply
              .header('x-ai-farm-digest', s.accepted.digest)
              .header('x-ai-farm-bytes', String(s.accepted.bytes));
          }
          return bare(reply, 204).send();
        } catch (err) {
          // Refused before the whole body was read: the connection is closed after the answer
          // (a client may stop sending once it has the answer, which would leave a drained
          // connection open for ever); what arrives meanwhile is read and dropped.
          if (body && !body.readableEnded) {
            body.removeAllListeners('readable');
            body.resume();
            void reply.header('connection', 'close');
          }
          throw err;
        }
      },
    );

    app.delete(
      one,
      {
        config: uploaders,
        schema: {
          tags: ['training'],
          summary: 'tus termination: drop an upload',
          params: ResumableParams,
          response: errors,
        },
      },
      async (req, reply) => {
        checkVersion(req.headers['tus-resumable'], reply);
        await uploads.terminate(principalOf(req), address(req.params));
        return bare(reply, 204).send();
      },
    );
  };
