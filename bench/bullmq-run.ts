import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { now, quantile, sleep, type CpuUse } from './common.js';
import { cpuDelta, cpuOf, pidsNamed, selfCpu } from './procs.js';

export interface BullmqOptions {
  redisUrl: string;
  n: number;
  concurrency: number;
  /** Jobs per addBulk call (calls made one after another). */
  chunk: number;
  timeoutMs: number;
  /** Add jobs one by one at this steady rate (tasks/s) instead of with addBulk. */
  rate?: number | undefined;
}

export interface BullmqResult {
  system: 'bullmq';
  n: number;
  rate?: number | undefined;
  ok: boolean;
  problems: string[];
  seconds: number;
  tasksPerSec: number;
  addsPerSec: number;
  latencyMs: { p50: number; p99: number; max: number };
  processed: number;
  duplicates: number;
  counts: Record<string, number>;
  cpu: { driver: CpuUse | null; redis: CpuUse | null };
}

/**
 * BullMQ doing the same no-op work: one Worker with `concurrency` (as BullMQ's own
 * benchmarks do), jobs added with addBulk; latency is from the job's timestamp (taken by
 * addBulk when it builds the job) to the start of its processing.
 */
export async function runBullmq(o: BullmqOptions): Promise<BullmqResult> {
  const u = new URL(o.redisUrl);
  const connection = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  const name = `aifarm-bench-${randomBytes(5).toString('hex')}`;
  const queue = new Queue(name, { connection });
  const latencies: number[] = [];
  const seen = new Map<string, number>();
  let completed = 0;
  let lastCompletedAt = 0;
  let onDone: (() => void) | null = null;
  const worker = new Worker(
    name,
    async (job) => {
      latencies.push(Date.now() - job.timestamp);
      const id = job.id ?? '';
      seen.set(id, (seen.get(id) ?? 0) + 1);
      return null;
    },
    { connection, concurrency: o.concurrency },
  );
  worker.on('completed', () => {
    completed++;
    lastCompletedAt = now();
    if (completed >= o.n) onDone?.();
  });
  const problems: string[] = [];
  worker.on('failed', (_job, err) => {
    if (problems.length < 10) problems.push(`job failed: ${err.message}`);
  });
  try {
    await queue.waitUntilReady();
    await worker.waitUntilReady();
    await sleep(200);
    const redisPids = pidsNamed(['redis-server']);
    const redisBefore = cpuOf(redisPids);
    const selfBefore = selfCpu();
    const done = new Promise<boolean>((resolve) => {
      onDone = () => resolve(true);
      setTimeout(() => resolve(false), o.timeoutMs).unref();
    });
    const start = now();
    if (o.rate) {
      const rate = o.rate;
      const adds: Promise<unknown>[] = [];
      for (let i = 0; i < o.n; i++) {
        const wait = start + (i * 1000) / rate - now();
        if (wait > 0) await sleep(wait);
        adds.push(queue.add('noop', { i }));
      }
      await Promise.all(adds);
    } else {
      for (let added = 0; added < o.n; added += o.chunk) {
        const size = Math.min(o.chunk, o.n - added);
        await queue.addBulk(
          Array.from({ length: size }, (_, i) => ({ name: 'noop', data: { i: added + i } })),
        );
      }
    }
    const addsDoneAt = now();
    const finished = await done;
    const end = finished ? lastCompletedAt : now();
    const cpu = { driver: cpuDelta(selfCpu(), selfBefore), redis: cpuDelta(cpuOf(redisPids), redisBefore) };
    if (!finished) problems.push(`only ${completed} of ${o.n} jobs completed within ${o.timeoutMs} ms`);
    const counts = (await queue.getJobCounts('completed', 'failed', 'active', 'wait', 'delayed')) as Record<
      string,
      number
    >;
    if (counts.completed !== o.n)
      problems.push(`${counts.completed} jobs completed in Redis, expected ${o.n}`);
    const duplicates = [...seen.values()].filter((c) => c > 1).length;
    if (duplicates > 0) problems.push(`${duplicates} jobs processed more than once`);
    if (seen.size !== o.n) problems.push(`${seen.size} distinct jobs processed, expected ${o.n}`);
    latencies.sort((a, b) => a - b);
    const seconds = (end - start) / 1000;
    return {
      system: 'bullmq',
      n: o.n,
      rate: o.rate,
      ok: problems.length === 0,
      problems,
      seconds,
      tasksPerSec: o.n / seconds,
      addsPerSec: o.n / ((addsDoneAt - start) / 1000),
      latencyMs: {
        p50: quantile(latencies, 0.5),
        p99: quantile(latencies, 0.99),
        max: quantile(latencies, 1),
      },
      processed: latencies.length,
      duplicates,
      counts,
      cpu,
    };
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
