import type { Command } from 'commander';
import { ApiClient, ApiError } from '../api/api-client.js';
import { resolveServerUrls } from '../api/server-url.js';

/** Flags every API command takes. */
export interface Conn {
  server?: string;
  token?: string;
  json?: boolean;
}

/** Adds --server, --token and --json to an API command. */
export const withConnFlags = (cmd: Command): Command =>
  cmd
    .option('--server <url>', 'server URL, e.g. http://host:8000 (or AI_FARM_SERVER)')
    .option('--token <token>', 'API token (or AI_FARM_TOKEN)')
    .option('--json', 'print JSON, for scripts');

/**
 * Wraps an API command's action: builds a client from --server/--token (or AI_FARM_SERVER,
 * AI_FARM_TOKEN) and maps the outcome to exit codes: 0 done, 1 the API refused or could not be
 * reached (its code and message printed), 2 bad flags.
 */
export const apiAction =
  (setExit: (code: number) => void) =>
  <A extends unknown[]>(fn: (api: ApiClient, ...args: A) => Promise<number | void>) =>
  async (...args: A): Promise<void> => {
    const flags = args.find((a): a is Conn => typeof a === 'object' && a !== null) ?? {};
    const server = flags.server ?? process.env.AI_FARM_SERVER;
    if (!server) {
      console.error('error: give the server with --server URL or AI_FARM_SERVER');
      return setExit(2);
    }
    let baseUrl: string;
    try {
      baseUrl = resolveServerUrls(server).httpUrl;
    } catch (err) {
      console.error(`error: --server: ${(err as Error).message}`);
      return setExit(2);
    }
    const api = new ApiClient({ baseUrl, token: flags.token ?? process.env.AI_FARM_TOKEN });
    try {
      setExit((await fn(api, ...args)) ?? 0);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (flags.json) console.error(JSON.stringify({ error: { code: err.code, message: err.message } }));
      else console.error(`error: ${err.code}: ${err.message}`);
      setExit(1);
    }
  };

/** Prints one page of a list: the page as JSON with --json, else a line per item and the count. */
export function printPage<T>(
  page: { items: T[]; total: number },
  json: boolean | undefined,
  line: (item: T) => string,
): void {
  if (json) return console.log(JSON.stringify(page, null, 2));
  for (const item of page.items) console.log(line(item));
  console.log(`(${page.items.length} of ${page.total})`);
}
