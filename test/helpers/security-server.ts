import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { generateToken } from '../../src/auth/token-service.js';
import { startServer } from '../../src/main.js';
import type { Dialect } from '../../src/storage/db.js';
import { createTestDatabase } from './db.js';
import { captureOutput, readLogDir, secretHits, type OutputCapture } from './security.js';
import { request, testConfig, type TestServer } from './server.js';

/**
 * What the security suite's files (security-*.test.ts, docs/security.md) share: their servers,
 * the tokens they mint, the captured stdout their secret scans read, and the figures printed
 * at the end of each file.
 */

/** A test server that also knows the admin's panel password. */
export interface SecServer extends TestServer {
  adminPassword: string;
}

/** Configuration keys and their values, as `testConfig` takes them. */
type Settings = Record<string, unknown>;

/** A real server with file logging and JSON logs on (captured) stdout. */
export async function startSecServer(dialect: Dialect, overrides: Settings = {}): Promise<SecServer> {
  const db = await createTestDatabase(dialect);
  const adminToken = generateToken();
  const adminPassword = `pw-${generateToken().slice(4, 28)}`;
  const server = await startServer(
    testConfig(db, { ADMIN_TOKEN: adminToken, ADMIN_PASSWORD: adminPassword, ...overrides }),
    { console: 'json' },
  );
  let stopped = false;
  return {
    server,
    db,
    url: server.httpUrl,
    adminToken,
    adminPassword,
    api: (method, path, body, token) =>
      request(server.httpUrl, method, path, body, token === undefined ? adminToken : token),
    stop: async () => {
      if (!stopped) await server.stop();
      stopped = true;
    },
  };
}

/**
 * The server of a security describe block: uploads up to 1 KiB, request headers within 2 s,
 * 50 WebSocket messages a second; its admin token and password go into `secrets`.
 */
export async function startSuiteServer(dialect: Dialect, secrets: Map<string, string>): Promise<SecServer> {
  const s = await startSecServer(dialect, {
    MAX_UPLOAD_BYTES: 1024,
    HEADERS_TIMEOUT: 2,
    MAX_MESSAGES_PER_SECOND: 50,
  });
  secrets.set('admin token', s.adminToken);
  secrets.set('admin password', s.adminPassword);
  return s;
}

/** Mints a token on `s` (201), and keeps it in `secrets`. */
export async function mintToken(s: SecServer, secrets: Map<string, string>, name: string, role: string) {
  const r = await s.api('POST', '/api/tokens', { name, role });
  expect(r.status).toBe(201);
  secrets.set(`${role} token ${name}`, r.body.token as string);
  return r.body as { token: string; id: string };
}

/** A token of the right form that the server never issued. */
export const wrongToken = 'afm_' + 'W'.repeat(43);

export const figures = {
  routes: 0,
  probes: 0,
  principals: 0,
  matrixChecks: 0,
  ownerControls: 0,
  originRefusals: 0,
  corpusRefused: 0,
  corpusSource: '',
  slowSocketsAtOnce: 0,
  slowSocketsOpened: 0,
  slowSocketsDropped: 0,
  slow408: 0,
  apiCallsDuringAttack: 0,
  worstApiMsDuringAttack: 0,
  roundTripsDuringAttack: 0,
  worstRoundTripMs: 0,
  floodClosedWith: [] as number[],
  rateLimited: 0,
  loginThrottled: 0,
  secretsScanned: 0,
  logBytesScanned: 0,
  secretHits: 0,
};

/** The lines of the figures' summary, by what they count. */
const SUMMARY = {
  matrix: () =>
    `  routes x principals: ${figures.routes} routes (${figures.probes} probes with HEAD and path variants) x ${figures.principals} principals = ${figures.matrixChecks} checks, plus ${figures.ownerControls} owner controls`,
  origin: () =>
    `  cross-origin refusals (WebSocket both ports, event stream, API): ${figures.originRefusals}`,
  corpus: () =>
    `  upload corpus refused before aggregation: ${figures.corpusRefused} items (.pt files made by ${figures.corpusSource})`,
  slowloris: () =>
    `  slowloris: ${figures.slowSocketsAtOnce} sockets at once, ${figures.slowSocketsOpened} opened, ${figures.slowSocketsDropped} dropped by the server (${figures.slow408} with 408)`,
  attack: () =>
    `  during the attack: ${figures.apiCallsDuringAttack} API calls (worst ${figures.worstApiMsDuringAttack} ms), ${figures.roundTripsDuringAttack} worker task round trips (worst ${figures.worstRoundTripMs} ms)`,
  floods: () => `  WebSocket floods closed with: ${figures.floodClosedWith.join(', ')}`,
  limited: () =>
    `  429 with Retry-After: ${figures.rateLimited} rate-limited, ${figures.loginThrottled} login-throttled`,
  secrets: () =>
    `  secrets scanned: ${figures.secretsScanned} in ${(figures.logBytesScanned / 1024).toFixed(0)} KiB of logs and stdout, ${figures.secretHits} hits`,
};

/**
 * Captures this file's stdout and stderr (the servers log JSON there, to be scanned for
 * secrets) from before its first test; after its last, restores them and prints the figures'
 * `lines`.
 */
export function captureSuiteOutput(lines: (keyof typeof SUMMARY)[]): Pick<OutputCapture, 'text'> {
  let output: OutputCapture | undefined;
  beforeAll(() => {
    output = captureOutput();
  });
  afterAll(() => {
    output?.restore();
    console.log(['security suite figures:', ...lines.map((l) => SUMMARY[l]())].join('\n'));
  });
  return { text: () => output?.text() ?? '' };
}

/**
 * Where any of `secrets` occurs in the stopped server's log files or in `stdout` (the captured
 * output), counted in the figures.
 */
export function loggedSecrets(s: SecServer, secrets: Map<string, string>, stdout: string): string[] {
  const texts = { ...readLogDir(join(s.db.dir, 'logs')), 'stdout+stderr': stdout };
  figures.secretsScanned += secrets.size;
  figures.logBytesScanned += Object.values(texts).reduce((n, t) => n + t.length, 0);
  const hits = secretHits(texts, secrets);
  figures.secretHits += hits.length;
  return hits;
}
