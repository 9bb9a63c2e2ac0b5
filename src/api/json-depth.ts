/**
 * The nesting limit of every JSON text the server parses from a client (HTTP bodies, WebSocket
 * frames, X-AI-Farm-Metrics). A JSON value nested thousands deep fits easily within the size
 * limits, parses, and then overflows the stack of whatever walks it recursively (validation,
 * serialization, the database driver), so it is refused before it is parsed.
 */

/**
 * Deepest nesting of objects and arrays accepted in a client's JSON (docs/security.md). MariaDB
 * refuses JSON documents nested 32 deep or more (json_valid), and the server stores a client's
 * values wrapped a level or two deeper (a result's metrics inside the result, inside an event).
 */
export const MAX_JSON_DEPTH = 24;

/**
 * True when `text` nests objects or arrays deeper than `max`. One pass over the characters,
 * skipping string contents (so `"[[["` inside a string does not count); the text need not be
 * valid JSON (JSON.parse reports that).
 */
export function jsonTooDeep(text: string, max: number = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** The message of the refusal, naming the limit. */
export function tooDeepMessage(what: string, max: number = MAX_JSON_DEPTH): string {
  return `${what} nests objects or arrays deeper than ${max} levels`;
}
