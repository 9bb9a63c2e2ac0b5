/**
 * Why a WorkerClient request or connection failed. `code` is stable:
 * - `not_connected`: sent while not registered (only reliable requests wait for a connection);
 * - `disconnected`: the connection dropped before the answer came;
 * - `timeout`: no answer within the request timeout;
 * - `closed`: close() was called;
 * - `unauthorized`: the server refused the token (no point retrying);
 * - `client_id_taken`: the id belongs to another token, or another connection took it over;
 * - `gave_up`: reconnection attempts exhausted;
 * - any code the server sends in an `error` message (see ProtocolError).
 */
export class WorkerClientError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'WorkerClientError';
  }
}

/**
 * The server answered a message with `error`. `stale_attempt` means the work was
 * reassigned: stop it. `invalid_message` means this client sent something malformed.
 */
export class ProtocolError extends WorkerClientError {
  constructor(
    code: string,
    message: string,
    /** The msg_id of the message refused, or null for an unsolicited error. */
    readonly replyTo: string | number | null,
  ) {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

/** Error codes that make a registration hopeless to retry as it is. */
export const FATAL_REGISTRATION_CODES: ReadonlySet<string> = new Set([
  'unauthorized',
  'forbidden',
  'client_id_taken',
  'invalid_message',
  'unsupported_protocol_version',
]);
