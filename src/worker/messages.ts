import { Value } from '@sinclair/typebox/value';
import { SERVER_MESSAGES, type ServerMessage } from '../api/protocol.js';

/** A frame from the server, checked against the protocol's schema for its type. */
export type ParsedServerMessage =
  { ok: true; message: ServerMessage } | { ok: false; error: string; type?: string | undefined };

const CONTROL_TYPES = new Set(['pause', 'resume', 'stop']);

/**
 * Parses and validates one text frame from the server. Never throws: a bad frame is an
 * expected outcome the client reports and skips, not a reason to drop the connection.
 */
export function parseServerMessage(text: string): ParsedServerMessage {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, error: 'not a JSON object' };
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') return { ok: false, error: 'no type' };
  // pause, resume and stop share one schema, listed as `control`.
  const key = CONTROL_TYPES.has(type) ? 'control' : type;
  const schema = Object.hasOwn(SERVER_MESSAGES, key)
    ? SERVER_MESSAGES[key as keyof typeof SERVER_MESSAGES]
    : undefined;
  // `control` is the schema's name, not a message type.
  if (!schema || type === 'control') {
    return { ok: false, error: `unknown message type ${JSON.stringify(type)}`, type };
  }
  if (!Value.Check(schema, value)) {
    const first = Value.Errors(schema, value).First();
    const where = first ? `${first.path || '/'}: ${first.message}` : 'does not match its schema';
    return { ok: false, error: `invalid ${type} message (${where})`, type };
  }
  return { ok: true, message: value as ServerMessage };
}

/** The `reply_to` of a server message, when it answers one of ours. */
export function replyToOf(message: ServerMessage): string | number | null {
  return 'reply_to' in message && message.reply_to !== undefined ? message.reply_to : null;
}
