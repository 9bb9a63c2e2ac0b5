import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type DestinationStream, type Logger, type StreamEntry } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** How the terminal shows logs: readable, JSON lines, or not at all (the files still get them). */
export type ConsoleMode = 'pretty' | 'json' | 'off';

export interface Loggers {
  /** Everything: server.log (and error.log for errors), plus the terminal. */
  logger: Logger;
  /** One line per HTTP request: access.log only. */
  access: Logger;
  /** Flushes and closes the files. */
  close(): void;
}

/**
 * Paths that may hold secrets. pino replaces them before a line is written, so no token
 * or password reaches a log file whatever a caller passes.
 */
export const REDACT_PATHS = [
  'token',
  'password',
  'authorization',
  '*.token',
  '*.password',
  '*.authorization',
  '*.headers.authorization',
  '*.headers.cookie',
  'headers.authorization',
  'headers.cookie',
];

export function createLoggers(opts: { logDir: string; level: string; console: ConsoleMode }): Loggers {
  mkdirSync(opts.logDir, { recursive: true });
  const file = (name: string) =>
    pino.destination({ dest: join(opts.logDir, name), mkdir: true, sync: false });
  const server = file('server.log');
  const errors = file('error.log');
  const accessFile = file('access.log');
  // Lines that come after close() (work still settling at shutdown) are dropped: a closed
  // file would throw from inside whatever tried to log, and crash the process.
  let closed = false;
  const guarded = (d: DestinationStream): DestinationStream => ({
    write: (line: string) => {
      if (!closed) d.write(line);
    },
  });

  const streams: StreamEntry[] = [
    { level: opts.level as pino.Level, stream: guarded(server) },
    { level: 'error', stream: guarded(errors) },
  ];
  if (opts.console === 'pretty') {
    streams.push({
      level: opts.level as pino.Level,
      stream: pretty({ colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname', sync: true }),
    });
  } else if (opts.console === 'json') {
    streams.push({ level: opts.level as pino.Level, stream: process.stdout as DestinationStream });
  }
  const base = {
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const logger = pino({ ...base, level: opts.level }, pino.multistream(streams, { dedupe: false }));
  const access = pino({ ...base, level: 'info', base: undefined }, guarded(accessFile));
  return {
    logger,
    access,
    close() {
      closed = true;
      for (const d of [server, errors, accessFile]) {
        try {
          d.flushSync();
        } catch {
          // Nothing buffered, or already closed.
        }
        // Late lines (a socket closing during shutdown) must not crash the process.
        d.on('error', () => {});
        d.end();
      }
    },
  };
}

/** A logger that writes nowhere, for tests and tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
