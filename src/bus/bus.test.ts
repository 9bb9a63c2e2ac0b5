import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../observability/logger.js';
import { InProcessBus, type Bus } from './bus.js';
import { RedisBus } from './redis-bus.js';

const REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const open: Bus[] = [];
afterEach(async () => {
  for (const b of open.splice(0)) await b.close();
});

const waitFor = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** The shared suite: every bus implementation must pass it. */
describe.each([
  ['in-process', async () => new InProcessBus()],
  [
    'redis',
    async () => {
      const b = new RedisBus(REDIS_URL, silentLogger());
      await b.ready();
      return b;
    },
  ],
] as const)('%s bus', (_name, make) => {
  it('delivers to local subscribers once, and unsubscribes', async () => {
    const bus = await make();
    open.push(bus);
    const got: number[] = [];
    const off = bus.subscribe('work.available', (m) => got.push(m.task_id));
    await bus.publish('work.available', { task_id: 1 });
    await waitFor(() => got.length === 1);
    off();
    await bus.publish('work.available', { task_id: 2 });
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual([1]);
  });

  it('survives a throwing subscriber', async () => {
    const bus = await make();
    open.push(bus);
    const got: string[] = [];
    bus.subscribe('task.control', () => {
      throw new Error('boom');
    });
    bus.subscribe('task.control', (m) => got.push(m.action));
    await bus.publish('task.control', { task_id: 1, action: 'pause' });
    await waitFor(() => got.length === 1);
  });
});

describe('redis bus across instances', () => {
  it('carries messages to other instances, exactly once each, and not back to the sender', async () => {
    const a = new RedisBus(REDIS_URL, silentLogger());
    const b = new RedisBus(REDIS_URL, silentLogger());
    open.push(a, b);
    const onA: string[] = [];
    const onB: string[] = [];
    a.subscribe('task.control', (m) => onA.push(`${m.task_id}:${m.action}`));
    b.subscribe('task.control', (m) => onB.push(`${m.task_id}:${m.action}`));
    await Promise.all([a.ready(), b.ready()]);
    await new Promise((r) => setTimeout(r, 50));
    await a.publish('task.control', { task_id: 7, action: 'stop' });
    await waitFor(() => onB.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(onA).toEqual(['7:stop']);
    expect(onB).toEqual(['7:stop']);
  });

  it('keeps delivering locally when Redis cannot be reached', async () => {
    const bus = new RedisBus('redis://127.0.0.1:1', silentLogger());
    open.push(bus);
    const got: number[] = [];
    bus.subscribe('work.available', (m) => got.push(m.task_id));
    await bus.publish('work.available', { task_id: 3 });
    expect(got).toEqual([3]);
  });
});
