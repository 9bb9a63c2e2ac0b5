import { InvalidArgumentError, type Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CodeCache } from '../worker/code/code-cache.js';
import { LineDisplay, TtyDisplay } from '../worker/display.js';
import { defaultIdFile, IdFile } from '../worker/id-file.js';
import { resolveServerUrls } from '../api/server-url.js';
import { Worker } from '../worker/worker.js';

interface WorkerFlags {
  server?: string;
  token?: string;
  apiUrl?: string;
  maxTasks: number;
  idFile?: string;
  name?: string;
  verbose?: boolean;
  progress?: boolean;
  codeCache?: string;
  codeCacheMb?: number;
  slowdown?: number;
}

/** Parses a number option of at least 1 (a factor). */
export function factor(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 1) {
    throw new InvalidArgumentError('expected a number of at least 1');
  }
  return n;
}

/** Parses a positive integer option. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

/**
 * `ai-farm worker`: runs tasks for a server until SIGINT or SIGTERM. The first signal stops
 * running tasks (their processes get SIGTERM, then SIGKILL after 5 s) and disconnects, so
 * the server reassigns them; a second signal kills them at once. Exit code 0 after a
 * signal, 1 when the server refuses the token or the connection is given up, 2 on bad flags.
 */
export function workerCommand(program: Command, setExit: (code: number) => void): void {
  program
    .command('worker')
    .description("run tasks for an AI Farm server with this machine's CPUs and GPUs")
    .option('--server <url>', 'server: http(s)://host:8000 or ws(s)://host:8765 (or AI_FARM_SERVER)')
    .option('--token <token>', 'worker token (or AI_FARM_TOKEN)')
    .option('--api-url <url>', 'HTTP API URL when --server is a ws:// URL (default: same host, port 8000)')
    .option('--max-tasks <n>', 'tasks run at once', positiveInt, 1)
    .option('--id-file <file>', 'where the client id is kept between runs (default ~/.ai-farm/worker-id)')
    .option('--name <name>', 'a label for this worker, shown by the server')
    .option('--code-cache <dir>', "where tasks' code is cached (default ~/.ai-farm/code-cache)")
    .option(
      '--code-cache-mb <n>',
      "most MiB of tasks' code kept, least recently used evicted first (or AI_FARM_CODE_CACHE_MB; default 1024)",
      positiveInt,
    )
    .option(
      '--slowdown <x>',
      'train X times slower: after each round of local training, wait X-1 times as long (to try stragglers)',
      factor,
    )
    .option('-v, --verbose', "print the tasks' output")
    .option('--no-progress', 'plain log lines even on a terminal')
    .action(async (flags: WorkerFlags) => {
      const server = flags.server ?? process.env.AI_FARM_SERVER;
      const token = flags.token ?? process.env.AI_FARM_TOKEN;
      if (!server) {
        console.error('error: give the server with --server URL or AI_FARM_SERVER');
        return setExit(2);
      }
      if (!token) console.error('warning: no token (--token or AI_FARM_TOKEN); the server may refuse');
      let urls;
      try {
        urls = resolveServerUrls(server, flags.apiUrl);
      } catch (err) {
        console.error(`error: --server: ${(err as Error).message}`);
        return setExit(2);
      }
      let cacheMb = flags.codeCacheMb ?? 1024;
      if (flags.codeCacheMb === undefined && process.env.AI_FARM_CODE_CACHE_MB !== undefined) {
        try {
          cacheMb = positiveInt(process.env.AI_FARM_CODE_CACHE_MB);
        } catch {
          console.error('error: AI_FARM_CODE_CACHE_MB must be a positive integer (MiB)');
          return setExit(2);
        }
      }
      let idFile: IdFile;
      try {
        idFile = IdFile.open(flags.idFile ?? defaultIdFile());
      } catch (err) {
        console.error(`error: ${(err as Error).message}`);
        return setExit(1);
      }
      const tty = process.stdout.isTTY && flags.progress !== false;
      const display = tty ? new TtyDisplay(flags.verbose) : new LineDisplay(flags.verbose);
      const worker = new Worker({
        wsUrl: urls.wsUrl,
        httpUrl: urls.httpUrl,
        token,
        maxTasks: flags.maxTasks,
        name: flags.name,
        idFile,
        display,
        codeCache: new CodeCache({
          dir: flags.codeCache ?? join(homedir(), '.ai-farm', 'code-cache'),
          maxBytes: cacheMb * 1024 * 1024,
        }),
        slowdown: flags.slowdown,
      });
      const onSignal = (sig: NodeJS.Signals) => {
        display.info(`${sig} received${worker.taskIds.length ? '' : '; bye'}`);
        void worker.shutdown();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        // A refused token or exhausted retries end `finished` too, with the error.
        worker.start().catch(() => undefined);
        const error = await worker.finished;
        await worker.shutdown();
        setExit(error ? 1 : 0);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        idFile.release();
      }
    });
}
