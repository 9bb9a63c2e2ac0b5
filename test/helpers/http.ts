/** JSON over HTTP for the tests; imports none of the server's code. */

export interface ApiResponse {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect arbitrary JSON
  body: any;
}

/**
 * `method path` on `base` with a bearer token (when given); a body is sent as JSON (a string
 * as it is). The answer's body is parsed JSON, or its text when it is not JSON.
 */
export async function request(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string | null,
  timeoutMs?: number,
): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload: string | undefined;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(base + path, {
    method,
    headers,
    body: payload,
    signal: timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (docs pages): keep the text.
  }
  return { status: res.status, headers: res.headers, body: parsed };
}
