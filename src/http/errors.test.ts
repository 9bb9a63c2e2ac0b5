import { describe, expect, it } from 'vitest';
import { AppError, isConnectionError } from '../errors.js';
import { formatValidationErrors, toAppError } from './errors.js';

/** The one mapping from anything thrown to the one error shape. */
describe('toAppError', () => {
  it('keeps application errors as they are', () => {
    const e = new AppError('task_not_found', 'task 3 does not exist', 404);
    expect(toAppError(e)).toBe(e);
  });

  it.each([
    ['PROTOCOL_CONNECTION_LOST', 'Connection lost: The server closed the connection.'],
    ['ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:3306'],
    ['ECONNRESET', 'read ECONNRESET'],
    ['ETIMEDOUT', 'connect ETIMEDOUT'],
    ['PROTOCOL_SEQUENCE_TIMEOUT', 'the database did not answer within 15000 ms'],
    ['ER_CONNECTION_KILLED', 'Connection was killed'],
    ['ER_SERVER_SHUTDOWN', 'Server shutdown in progress'],
    ['ER_CON_COUNT_ERROR', 'Too many connections'],
  ])('answers a lost database connection (%s) with 503 database_unavailable', (code, message) => {
    const err = Object.assign(new Error(message), { code });
    expect(isConnectionError(err)).toBe(true);
    const app = toAppError(err);
    expect(app).toMatchObject({ code: 'database_unavailable', status: 503, expose: true });
    expect(app.message).not.toContain(message);
    expect(app.cause).toBe(err);
  });

  it('treats a fatal driver error and "Lost connection to MySQL server" as a lost connection', () => {
    expect(toAppError(Object.assign(new Error('boom'), { fatal: true })).status).toBe(503);
    expect(toAppError(new Error('Lost connection to MySQL server during query')).status).toBe(503);
  });

  it('hides an unknown error behind 500 internal_error', () => {
    const app = toAppError(new Error('secret: /etc/passwd at line 3'));
    expect(app).toMatchObject({ code: 'internal_error', status: 500, expose: false });
    expect(app.message).toBe('Internal server error');
    // A SQL error that is not about the connection is a bug, not an outage.
    const sqlError = Object.assign(new Error("Table 'x.audit_log' doesn't exist"), {
      code: 'ER_NO_SUCH_TABLE',
    });
    expect(toAppError(sqlError).status).toBe(500);
    expect(toAppError('a string').status).toBe(500);
    expect(toAppError(null).status).toBe(500);
  });

  it.each([
    ['FST_ERR_CTP_BODY_TOO_LARGE', 413, 'body_too_large'],
    ['FST_ERR_CTP_INVALID_MEDIA_TYPE', 415, 'unsupported_media_type'],
    ['FST_ERR_CTP_EMPTY_JSON_BODY', 400, 'invalid_json'],
    ['FST_ERR_CTP_INVALID_JSON_BODY', 400, 'invalid_json'],
  ])("maps Fastify's %s to %i %s", (code, status, ours) => {
    expect(toAppError(Object.assign(new Error('x'), { code, statusCode: status }))).toMatchObject({
      status,
      code: ours,
    });
  });

  it('keeps other client errors from Fastify as 4xx with a lower-case code', () => {
    const app = toAppError(Object.assign(new Error('bad'), { code: 'FST_ERR_SOMETHING', statusCode: 422 }));
    expect(app).toMatchObject({ status: 422, code: 'fst_err_something' });
  });
});

describe('formatValidationErrors', () => {
  it('names the field, the missing field and the unknown field', () => {
    const err = formatValidationErrors(
      [
        { instancePath: '/priority', message: 'must be integer', keyword: 'type', params: {} },
        { instancePath: '', keyword: 'required', params: { missingProperty: 'type' } },
        { instancePath: '', keyword: 'additionalProperties', params: { additionalProperty: 'extra' } },
      ],
      'body',
    ) as AppError;
    expect(err.code).toBe('validation_failed');
    expect(err.status).toBe(400);
    expect(err.message).toBe(
      "body/priority must be integer; body is missing the required field 'type'; body has an unknown field 'extra'",
    );
    expect(err.details).toEqual({ fields: ['body/priority', 'body', 'body'] });
  });
});
