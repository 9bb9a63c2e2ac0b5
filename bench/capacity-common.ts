/**
 * Shared by the connection capacity benchmark's processes (bench/capacity.ts drives,
 * bench/capacity-server.ts is a server under test, bench/capacity-clients.ts a load
 * generator): the messages they exchange over their IPC channels.
 */

/** Which server a capacity-server child runs. */
export type ServerKind = 'farm' | 'bare';

/** Memory of a server process (bytes), taken after a forced full GC. */
export interface MemorySample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/**
 * Event-loop delay over a window (ms): how late a 10 ms timer's ticks came, from
 * perf_hooks.monitorEventLoopDelay (whose raw values are these plus the 10 ms period).
 */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** What the server child reports on `stats`. */
export interface ServerStats {
  connections: number;
  /** CPU seconds since `window-start`. */
  cpu: { user: number; system: number };
  /** Wall seconds since `window-start`. */
  wall: number;
  loop: LoopDelay;
  /** Garbage collections since `window-start`: count, total and longest pause (ms). */
  gc: Record<'minor' | 'major', { count: number; ms: number; max: number }>;
  /** Loop stalls over 200 ms since `window-start`: [seconds into the window, ms]. */
  stalls: [number, number][];
}

/** Driver -> server child. */
export type ServerRequest =
  | { id: number; cmd: 'memory'; gc: boolean }
  | { id: number; cmd: 'window-start' }
  | { id: number; cmd: 'stats' }
  | { id: number; cmd: 'profile-start' }
  | { id: number; cmd: 'profile-stop'; file: string }
  | { id: number; cmd: 'stop' };

/** Server child -> driver. */
export type ServerMessage =
  | { type: 'ready'; wsUrl: string; token: string | null; pid: number }
  | { type: 'reply'; id: number; ok: true; value: unknown }
  | { type: 'reply'; id: number; ok: false; error: string };

/** Driver -> load generator. */
export type ClientsRequest =
  | {
      cmd: 'connect';
      wsUrl: string;
      token: string | null;
      /** Index of this generator's first connection in the whole run (ids and heartbeat phases). */
      first: number;
      count: number;
      /** Connections of the whole run: heartbeat phases are spread over all of them. */
      total: number;
      /** Connection attempts in flight at once. */
      parallel: number;
      /** Loopback source addresses to spread the connections over. */
      sources: string[];
      heartbeatMs: number;
      /** Give up connecting after this long. */
      timeoutMs: number;
      /**
       * Open this generator's connections up to this local index (exclusive); a later
       * `connect` with a higher one opens the rest (the other fields are read only once).
       */
      upTo: number;
    }
  /** Start heartbeats, the run's first at `at` (epoch ms, the same for every generator). */
  | { cmd: 'beat'; at: number }
  | { cmd: 'counters' }
  | { cmd: 'stop' };

/** Counters a load generator keeps. */
export interface ClientsCounters {
  open: number;
  registered: number;
  failed: number;
  /** Connections closed by the server or lost after they registered. */
  dropped: number;
  heartbeatsSent: number;
  acks: number;
  errors: number;
  /** First few failure and error texts. */
  problems: string[];
  /** CPU seconds of the generator process so far. */
  cpu: number;
}

/** Load generator -> driver. */
export type ClientsMessage =
  | { type: 'ready' }
  | { type: 'progress'; registered: number; failed: number }
  | { type: 'connected'; counters: ClientsCounters }
  | { type: 'counters'; counters: ClientsCounters }
  | { type: 'stopped' };
