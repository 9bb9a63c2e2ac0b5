import type { ApiResponse } from './server.js';

/** A logged-in admin-panel session, as a browser would hold it. */
export interface PanelSession {
  /** The Cookie header value. */
  cookie: string;
  csrf: string;
  /** The raw Set-Cookie of the login answer, to inspect its attributes. */
  setCookie: string;
  /** fetch with the session cookie; `csrf: false` leaves the CSRF header out. */
  api(method: string, path: string, body?: unknown, opts?: { csrf?: boolean | string }): Promise<ApiResponse>;
}

export async function parse(res: Response): Promise<ApiResponse> {
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (HTML pages): keep the text.
  }
  return { status: res.status, headers: res.headers, body };
}

export async function postLogin(
  base: string,
  username: string,
  password: string,
  headers: Record<string, string> = {},
): Promise<ApiResponse> {
  return parse(
    await fetch(`${base}/api/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ username, password }),
    }),
  );
}

/** Logs in and returns the session; throws when the login is refused. */
export async function login(base: string, username: string, password: string): Promise<PanelSession> {
  const res = await postLogin(base, username, password);
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`);
  const setCookie = res.headers.get('set-cookie') ?? '';
  const cookie = setCookie.split(';')[0] ?? '';
  const csrf = res.body.csrf_token as string;
  return {
    cookie,
    csrf,
    setCookie,
    api: async (method, path, body, opts = {}) => {
      const headers: Record<string, string> = { cookie };
      if (opts.csrf !== false) headers['x-csrf-token'] = typeof opts.csrf === 'string' ? opts.csrf : csrf;
      if (body !== undefined) headers['content-type'] = 'application/json';
      return parse(
        await fetch(base + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        }),
      );
    },
  };
}

/** Reads Server-Sent Events from a response until `until` returns true or the time runs out. */
export async function readEvents(
  res: Response,
  until: (events: { event: string; data: unknown }[]) => boolean,
  timeoutMs = 15_000,
): Promise<{ event: string; data: unknown }[]> {
  const events: { event: string; data: unknown }[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline && !until(events)) {
      const chunk = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now()))),
      ]);
      if (!chunk || chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let idx: number;
      while ((idx = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, idx);
        buffer = buffer.slice(idx + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return events;
}
