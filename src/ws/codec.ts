import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { TSchema } from '@sinclair/typebox';
import { jsonTooDeep, tooDeepMessage } from '../api/json-depth.js';
import { CLIENT_MESSAGES, type ClientMessage, type ClientMessageType } from '../api/protocol.js';

const CHECKS = Object.fromEntries(
  Object.entries(CLIENT_MESSAGES).map(([type, schema]) => [type, TypeCompiler.Compile(schema as TSchema)]),
) as Record<ClientMessageType, TypeCheck<TSchema>>;

export type Decoded =
  | { ok: true; msg: ClientMessage; /** A bare system-info frame read as `register`. */ original?: boolean }
  | { ok: false; code: string; message: string; msgId: string | number | null };

/**
 * Turns a frame into a validated message, or an error naming what is wrong with it.
 * A first frame with no `type` that looks like the original client's system-info object
 * is read as a `register`.
 */
export function decodeFrame(data: Buffer | string, isBinary: boolean, registered: boolean): Decoded {
  if (isBinary)
    return fail('invalid_message', 'binary frames are not part of the protocol; send JSON text', null);
  const text = typeof data === 'string' ? data : data.toString('utf8');
  // Refused before parsing: a deep value would overflow the stack of every later walk of it.
  if (jsonTooDeep(text)) return fail('too_deep', tooDeepMessage('frame'), null);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail('invalid_json', `frame is not valid JSON: ${(err as Error).message}`, null);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return fail('invalid_message', 'a message must be a JSON object', null);
  }
  const obj = value as Record<string, unknown>;
  const msgId = typeof obj.msg_id === 'string' || typeof obj.msg_id === 'number' ? obj.msg_id : null;
  const original = obj.type === undefined && !registered && 'cpu' in obj && 'ram' in obj;
  if (original) obj.type = 'register';
  if (typeof obj.type !== 'string') return fail('invalid_message', 'message has no "type" field', msgId);
  if (!Object.hasOwn(CHECKS, obj.type)) {
    return fail(
      'unknown_type',
      `unknown message type "${String(obj.type).slice(0, 64)}"; expected one of ${Object.keys(CHECKS).join(', ')}`,
      msgId,
    );
  }
  const type = obj.type as ClientMessageType;
  const check = CHECKS[type];
  if (!check.Check(obj)) {
    const first = check.Errors(obj).First();
    const where = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : '(message)';
    return fail('invalid_message', `${type}: ${where} ${first?.message ?? 'is invalid'}`, msgId);
  }
  return { ok: true, msg: obj as unknown as ClientMessage, ...(original ? { original } : {}) };
}

function fail(code: string, message: string, msgId: string | number | null): Decoded {
  return { ok: false, code, message, msgId };
}

/** Task ids arrive as numbers or, from the original client, as strings. */
export function taskIdOf(v: number | string): number {
  return typeof v === 'number' ? v : Number.parseInt(v, 10);
}
