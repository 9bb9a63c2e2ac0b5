import { afterEach, describe, expect, it, vi } from 'vitest';
import { LineSplitter, parseOutputLine } from '../src/worker/executors/output-lines.js';
import { ProgressThrottle } from '../src/worker/progress-throttle.js';
import {
  ApiClient,
  ApiError,
  Backoff,
  parseServerMessage,
  resolveServerUrls,
  WorkerClient,
  WorkerClientError,
  type DisconnectInfo,
} from '../src/worker/sdk.js';
import { freePort } from './helpers/ports.js';

// Unit tests of the SDK's pure parts, and of the client where no server is needed
// (a refused TCP connection is real; nothing here stands in for the server).

const systemInfo = { cpu: { cores_logical: 2 }, ram: { total: 1024 } };

describe('Backoff', () => {
  it('grows exponentially up to the bound, with jitter below each step', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5, random: () => 0 });
    expect([1, 2, 3, 4, 5, 6].map(() => b.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
    const hi = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5].map(() => hi.next())).toEqual([50, 100, 200, 400, 500]);
  });

  it('stays within [base*(1-jitter), base] with real randomness and never overflows', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 30_000 });
    for (let i = 0; i < 300; i++) {
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(30_000);
      if (i > 10) expect(d).toBeGreaterThanOrEqual(15_000);
    }
    expect(b.attempts).toBe(300);
  });

  it('starts over after reset()', () => {
    const b = new Backoff({ initialMs: 10, random: () => 0 });
    b.next();
    b.next();
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(10);
  });
});

describe('resolveServerUrls', () => {
  it.each([
    ['http://host:8000', 'ws://host:8000/ws', 'http://host:8000'],
    ['https://farm.example.com', 'wss://farm.example.com/ws', 'https://farm.example.com'],
    ['http://host:8000/farm/', 'ws://host:8000/farm/ws', 'http://host:8000/farm'],
    ['host:8000', 'ws://host:8000/ws', 'http://host:8000'],
    ['ws://host:8765', 'ws://host:8765/', 'http://host:8000'],
    ['wss://host:8000/ws', 'wss://host:8000/ws', 'https://host:8000'],
    ['ws://10.0.0.2:8765/?token=abc', 'ws://10.0.0.2:8765/?token=abc', 'http://10.0.0.2:8000'],
  ])('%s -> %s and %s', (input, ws, http) => {
    expect(resolveServerUrls(input)).toEqual({ wsUrl: ws, httpUrl: http });
  });

  it('takes an explicit API URL and refuses other schemes', () => {
    expect(resolveServerUrls('ws://h:8765', 'http://h:9000/').httpUrl).toBe('http://h:9000');
    expect(() => resolveServerUrls('ftp://h')).toThrow(/unsupported/);
    expect(() => resolveServerUrls(' ')).toThrow(/empty/);
  });
});

describe('parseServerMessage', () => {
  it('accepts every server message of the protocol', () => {
    const ok = [
      {
        type: 'registered',
        reply_to: 'a-1',
        client_id: 'c1',
        protocol_version: 1,
        heartbeat_interval: 30,
        connection_timeout: 60,
      },
      {
        type: 'task',
        data: {
          id: 3,
          type: 'command',
          name: null,
          config: {},
          requirements: {},
          attempt: 1,
          rank: 0,
          world_size: 1,
        },
      },
      { type: 'pause', task_id: 3 },
      { type: 'resume', task_id: 3 },
      { type: 'stop', task_id: 3, reason: 'cancelled' },
      { type: 'heartbeat_ack', reply_to: 5, timestamp: 1 },
      { type: 'no_task', reply_to: null, reason: 'nothing fits' },
      { type: 'ack', reply_to: 'x', of: 'task_result', duplicate: true },
      { type: 'error', reply_to: 'x', code: 'stale_attempt', message: 'reassigned' },
    ];
    for (const m of ok)
      expect(parseServerMessage(JSON.stringify(m)), m.type).toEqual({ ok: true, message: m });
  });

  it('names the problem of a bad frame instead of throwing', () => {
    expect(parseServerMessage('{oops')).toMatchObject({ ok: false, error: 'not JSON' });
    expect(parseServerMessage('[1]')).toMatchObject({ ok: false, error: 'not a JSON object' });
    expect(parseServerMessage('{"x":1}')).toMatchObject({ ok: false, error: 'no type' });
    expect(parseServerMessage('{"type":"control","task_id":1}')).toMatchObject({
      ok: false,
      type: 'control',
    });
    expect(parseServerMessage('{"type":"toString"}')).toMatchObject({
      ok: false,
      error: /unknown message type/,
    });
    expect(parseServerMessage('{"type":"pause","task_id":"x"}')).toMatchObject({
      ok: false,
      error: /invalid pause message \(\/task_id/,
    });
  });
});

describe('progress protocol lines', () => {
  it('parses progress, result and log lines', () => {
    expect(parseOutputLine('{"progress": 12.5, "metrics": {"loss": 1}}')).toEqual({
      kind: 'progress',
      progress: 12.5,
      metrics: { loss: 1 },
    });
    expect(parseOutputLine('  {"progress": -3}  ')).toEqual({
      kind: 'progress',
      progress: 0,
      metrics: undefined,
    });
    expect(parseOutputLine('{"result": {"a": 1}}')).toEqual({
      kind: 'result',
      result: { a: 1 },
      metrics: undefined,
    });
    for (const line of ['plain', '{"progress": "50"}', '{"result": [1]}', '{"progress": 1', 'null', '{}']) {
      expect(parseOutputLine(line), line).toEqual({ kind: 'log', line });
    }
  });

  it('splits chunks into lines, handles CRLF and cuts endless lines', () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l), 10);
    s.push('ab');
    s.push('c\r\nde\nf');
    s.push('0123456789abc');
    s.end();
    expect(lines).toEqual(['abc', 'de', 'f012345678', '9abc']);
  });
});

describe('ProgressThrottle', () => {
  afterEach(() => vi.useRealTimers());

  it('sends at most one report per interval and always the latest one', () => {
    vi.useFakeTimers();
    const sent: number[] = [];
    const t = new ProgressThrottle(
      (s) => sent.push(s.progress),
      250,
      () => Date.now(),
    );
    for (let p = 1; p <= 10; p++) t.push({ progress: p });
    expect(sent).toEqual([1]);
    vi.advanceTimersByTime(250);
    expect(sent).toEqual([1, 10]);
    t.push({ progress: 11 });
    t.push({ progress: 12 });
    t.flush();
    expect(sent).toEqual([1, 10, 12]);
    t.push({ progress: 13 });
    t.cancel();
    vi.advanceTimersByTime(1000);
    expect(sent).toEqual([1, 10, 12]);
  });
});

describe('WorkerClient without a server', () => {
  it('refuses requests while not connected, except results, which wait', async () => {
    const client = new WorkerClient({ url: 'ws://127.0.0.1:1/', systemInfo });
    await expect(client.sendProgress({ task_id: 1, progress: 5 })).rejects.toMatchObject({
      code: 'not_connected',
    });
    const result = client.sendResult({ task_id: 1, status: 'completed' });
    await client.close();
    await expect(result).rejects.toMatchObject({ code: 'closed' });
  });

  it('reconnects with growing, bounded delays and gives up after maxReconnectAttempts', async () => {
    const port = await freePort();
    const client = new WorkerClient({
      url: `ws://127.0.0.1:${port}/`,
      systemInfo,
      backoff: { initialMs: 20, maxMs: 80, jitter: 0 },
      maxReconnectAttempts: 4,
    });
    const drops: DisconnectInfo[] = [];
    client.on('disconnected', (d) => drops.push(d));
    const closed = new Promise((r) => client.once('closed', r));
    const err = await client.connect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerClientError);
    expect(err).toMatchObject({ code: 'gave_up' });
    expect(drops.map((d) => d.reconnectInMs)).toEqual([20, 40, 80, 80, null]);
    expect(await closed).toMatchObject({ code: 'gave_up' });
  });

  it('close() during the backoff stops reconnecting and rejects connect()', async () => {
    const port = await freePort();
    const client = new WorkerClient({
      url: `ws://127.0.0.1:${port}/`,
      systemInfo,
      backoff: { initialMs: 60_000 },
    });
    const connecting = client.connect();
    await new Promise((r) => client.once('disconnected', r));
    await client.close();
    await expect(connecting).rejects.toMatchObject({ code: 'closed' });
    expect(client.connected).toBe(false);
  });
});

describe('ApiClient', () => {
  it('throws ApiError unreachable when nothing listens', async () => {
    const port = await freePort();
    const api = new ApiClient({ baseUrl: `http://127.0.0.1:${port}/`, token: 't' });
    const err = await api.tasks.list().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 0, code: 'unreachable' });
  });
});
