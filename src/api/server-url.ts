/** Where a worker or the CLI finds the server. */
export interface ServerUrls {
  /** WebSocket URL of the worker gateway. */
  wsUrl: string;
  /** Base URL of the HTTP API (no trailing slash). */
  httpUrl: string;
}

/** SERVER_PORT's default: the HTTP API when only the WebSocket port is known. */
const DEFAULT_HTTP_PORT = '8000';

/**
 * Resolves what a user typed as the server into both URLs.
 * - `http(s)://host:8000[/prefix]` -> `ws(s)://host:8000[/prefix]/ws` (the single-port gateway);
 * - `ws(s)://host:8765[/path]` is used as given; the API is guessed at the same host on
 *   port 8000, or at the same origin when the path ends in `/ws`;
 * - `host:port` without a scheme is taken as http.
 * `apiUrl`, when given, overrides the guessed HTTP URL.
 */
export function resolveServerUrls(server: string, apiUrl?: string): ServerUrls {
  const input = server.trim();
  if (!input) throw new TypeError('the server URL is empty');
  const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(input) ? input : `http://${input}`);
  const path = url.pathname.replace(/\/+$/, '');
  let wsUrl: string;
  let httpUrl: string;
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    httpUrl = `${url.origin}${path}`;
    const ws = new URL(url.href);
    ws.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    ws.pathname = `${path}/ws`;
    ws.hash = '';
    wsUrl = ws.href;
  } else if (url.protocol === 'ws:' || url.protocol === 'wss:') {
    wsUrl = url.href;
    const http = new URL(url.href);
    http.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    if (path.endsWith('/ws')) {
      httpUrl = `${http.origin}${path.slice(0, -3)}`;
    } else {
      http.port = DEFAULT_HTTP_PORT;
      httpUrl = http.origin;
    }
  } else {
    throw new TypeError(`unsupported server URL scheme ${url.protocol} (use http, https, ws or wss)`);
  }
  return { wsUrl, httpUrl: apiUrl ? apiUrl.replace(/\/+$/, '') : httpUrl };
}
