import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../observability/logger.js';
import { InProcessBus, TOPICS, type Bus, type BusTopics, type Topic } from './bus.js';
import { RedisBus } from './redis-bus.js';
import { RedisLink } from './redis-link.js';
import { sleep, waitFor } from '../../test/helpers/wait.js';

const REDIS_URL = process.env.AI_FARM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const b of open.splice(0).reverse()) await b.close();
});

/** A Redis bus as one server instance has it; `prefix` keeps tests apart on the shared Redis. */
function redisBus(prefix: string, url = REDIS_URL): RedisBus {
  const link = new RedisLink({
    url,
    prefix,
    instanceId: randomBytes(4).toString('hex'),
    logger: silentLogger(),
  });
  const bus = new RedisBus(link, silentLogger());
  open.push(link, bus);
  return bus;
}
const freshPrefix = () => `aifarm-test-${randomBytes(5).toString('hex')}:`;

/** The shared suite: every bus implementation must pass it. */
describe.each([
  [
    'in-process',
    async (): Promise<Bus> => {
      const b = new InProcessBus();
      open.push(b);
      return b;
    },
  ],
  [
    'redis',
    async (): Promise<Bus> => {
      const b = redisBus(freshPrefix());
      await b.ready();
      return b;
    },
  ],
] as const)('%s bus', (_name, make) => {
  it('delivers to local subscribers once, and unsubscribes', async () => {
    const bus = await make();
    const got: number[] = [];
    const off = bus.subscribe('work.available', (m) => got.push(m.task_id));
    await bus.publish('work.available', { task_id: 1 });
    await waitFor('the message', () => got.length === 1, 5000, { everyMs: 10 });
    off();
    await bus.publish('work.available', { task_id: 2 });
    await sleep(50);
    expect(got).toEqual([1]);
  });

  it('survives a throwing subscriber', async () => {
    const bus = await make();
    const got: string[] = [];
    bus.subscribe('task.control', () => {
      throw new Error('boom');
    });
    bus.subscribe('task.control', (m) => got.push(m.action));
    await bus.publish('task.control', { task_id: 1, action: 'pause' });
    await waitFor('the message', () => got.length === 1, 5000, { everyMs: 10 });
  });
});

describe('redis bus across instances', () => {
  it('carries messages to other instances, exactly once each, and not back to the sender', async () => {
    const prefix = freshPrefix();
    const a = redisBus(prefix);
    const b = redisBus(prefix);
    const onA: string[] = [];
    const onB: string[] = [];
    a.subscribe('task.control', (m) => onA.push(`${m.task_id}:${m.action}`));
    b.subscribe('task.control', (m) => onB.push(`${m.task_id}:${m.action}`));
    await Promise.all([a.ready(), b.ready()]);
    await a.publish('task.control', { task_id: 7, action: 'stop' });
    await waitFor('the first message on B', () => onB.length === 1, 5000, { everyMs: 10 });
    // A later message proves nothing more of the first is on its way.
    await a.publish('task.control', { task_id: 8, action: 'pause' });
    await waitFor('the second message on B', () => onB.length === 2, 5000, { everyMs: 10 });
    expect(onA).toEqual(['7:stop', '8:pause']);
    expect(onB).toEqual(['7:stop', '8:pause']);
  });

  it('carries every topic the server uses, to subscribers that came after the start', async () => {
    const prefix = freshPrefix();
    const a = redisBus(prefix);
    const b = redisBus(prefix);
    await Promise.all([a.ready(), b.ready()]);
    const got: Topic[] = [];
    for (const t of TOPICS) b.subscribe(t, () => got.push(t));
    // The bus carries any JSON; topics added later (src/cluster) get a plain sample.
    const samples: Partial<{ [T in Topic]: BusTopics[T] }> = {
      'work.available': { task_id: 1 },
      'task.control': { task_id: 1, action: 'resume' },
      'task.changed': { task_id: 1, status: 'running', progress: 5 },
      'client.changed': { client_id: 'c1', connected: true },
    };
    for (const t of TOPICS) await a.publish(t, (samples[t] ?? { task_id: 1, client_id: 'c1' }) as never);
    await waitFor('every topic', () => got.length === TOPICS.length, 5000, { everyMs: 10 });
    expect(got).toEqual([...TOPICS]);
  });

  it('keeps delivering locally when Redis cannot be reached, and keeps the rest for later', async () => {
    const bus = redisBus(freshPrefix(), 'redis://127.0.0.1:1');
    const got: number[] = [];
    bus.subscribe('work.available', (m) => got.push(m.task_id));
    await bus.publish('work.available', { task_id: 3 });
    expect(got).toEqual([3]);
    expect(bus.waiting).toBe(1);
  });
});
