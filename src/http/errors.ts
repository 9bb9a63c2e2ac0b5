import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../observability/logger.js';
import { AppError, databaseUnavailable, isConnectionError } from '../errors.js';

/** Fastify's own error codes mapped to ours. */
const FASTIFY_CODES: Record<string, { code: string; status: number }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'body_too_large', status: 413 },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'unsupported_media_type', status: 415 },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'invalid_json', status: 400 },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'invalid_json', status: 400 },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'invalid_content_length', status: 400 },
  FST_ERR_VALIDATION: { code: 'validation_failed', status: 400 },
};

/** Turns any error into the one JSON error shape; unknown errors are logged and hidden. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (isConnectionError(err)) return databaseUnavailable(err);
  // `throw null` is legal JavaScript; the handler must still answer with the one shape.
  const fe = (typeof err === 'object' && err !== null ? err : {}) as Partial<FastifyError> & {
    validation?: unknown;
  };
  if (fe.validation) return new AppError('validation_failed', fe.message ?? 'invalid request', 400);
  const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return new AppError(mapped.code, fe.message ?? mapped.code, mapped.status);
  if (err instanceof SyntaxError && /JSON/i.test(err.message)) {
    return new AppError('invalid_json', `body is not valid JSON: ${err.message}`, 400);
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new AppError(
      String(fe.code ?? 'bad_request').toLowerCase(),
      fe.message ?? 'bad request',
      fe.statusCode,
    );
  }
  return new AppError('internal_error', 'Internal server error', 500, undefined, false);
}

export function errorHandler(logger: Logger) {
  return (err: unknown, req: FastifyRequest, reply: FastifyReply): void => {
    const app = toAppError(err);
    if (app.status >= 500) {
      logger.error({ err, method: req.method, path: req.url.split('?')[0] }, 'request failed');
    }
    if (app.status === 503) void reply.header('Retry-After', '5');
    void reply.status(app.status).send({
      error: {
        code: app.code,
        message: app.expose ? app.message : 'Internal server error',
        ...(app.details ? { details: app.details } : {}),
      },
    });
  };
}

/**
 * Validation messages that name the field: "body/priority must be integer",
 * "body has an unknown field 'foo'".
 */
export function formatValidationErrors(
  errors: {
    instancePath: string;
    message?: string | undefined;
    keyword: string;
    params: Record<string, unknown>;
  }[],
  part: string,
): Error {
  const parts = errors.map((e) => {
    const where = `${part}${e.instancePath}`;
    if (e.keyword === 'additionalProperties')
      return `${where} has an unknown field '${String(e.params.additionalProperty)}'`;
    if (e.keyword === 'required')
      return `${where} is missing the required field '${String(e.params.missingProperty)}'`;
    if (e.keyword === 'anyOf' || e.keyword === 'union') return `${where} is not one of the allowed values`;
    return `${where} ${e.message ?? 'is invalid'}`;
  });
  const err = new AppError('validation_failed', parts.join('; '), 400, {
    fields: errors.map((e) => `${part}${e.instancePath}`),
  });
  return err;
}
