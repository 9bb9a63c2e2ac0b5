import { encodeSafetensors } from '../../src/training/safetensors/encode.js';
import { WorkerClient } from '../../src/worker/worker-client.js';
import type { TaskData, TrainingData } from '../../src/api/protocol.js';
import { sleep } from './wait.js';
import { systemInfo } from './ws-client.js';

/**
 * A training rank for chaos tests, built on the SDK's WorkerClient (the reconnecting client
 * the reference worker uses) with a tiny synthetic model, so a round takes milliseconds and
 * every upload's answer is seen and written down in a ledger.
 *
 * The update of rank k, attempt a, in round r is the constant `updateValue(r, k, a)` times
 * a fixed pattern, weighed by num_samples k + 1: the FedAvg aggregate of any set of updates
 * is then known exactly, and one update lost or counted twice changes it.
 */
export const PATTERN_A = [1, 1, 1, 1];
export const PATTERN_B = [1, -1, 2, 0.5];

export function updateValue(round: number, rank: number, attempt: number): number {
  return round + 10 * rank + 1 + attempt / 8;
}
export const samplesOf = (rank: number) => rank + 1;

export function syntheticUpdate(v: number): Buffer {
  return encodeSafetensors([
    { name: 'a', dtype: 'F32', shape: [4], data: Float32Array.from(PATTERN_A.map((x) => x * v)) },
    { name: 'b', dtype: 'F32', shape: [2, 2], data: Float32Array.from(PATTERN_B.map((x) => x * v)) },
  ]);
}

/** What the server said about one (task, round, rank). */
export interface LedgerEntry {
  taskId: number;
  round: number;
  rank: number;
  attempt: number;
  /** 201 answers (a second one would be the server accepting the same update twice). */
  created: number;
  /** 200 duplicate answers (a retry after a lost answer). */
  duplicates: number;
  /** Seen as `training.accepted` in a re-sent task without an answer of its own. */
  acceptedFlag: boolean;
}

/** Every acknowledgement the server gave, shared by the ranks of a test. */
export class UploadLedger {
  readonly entries = new Map<string, LedgerEntry>();
  /** 409 codes and network errors met, by kind (for the summary). */
  readonly refusals = new Map<string, number>();

  private entry(taskId: number, round: number, rank: number, attempt: number): LedgerEntry {
    const key = `${taskId}:${round}:${rank}`;
    let e = this.entries.get(key);
    if (!e) {
      e = { taskId, round, rank, attempt, created: 0, duplicates: 0, acceptedFlag: false };
      this.entries.set(key, e);
    }
    if (e.attempt !== attempt) {
      // Two attempts acknowledged for one rank of one round: only one may count.
      this.note(`two attempts acknowledged (${key}: ${e.attempt} and ${attempt})`);
    }
    return e;
  }
  created(t: number, r: number, k: number, a: number): void {
    this.entry(t, r, k, a).created++;
  }
  duplicate(t: number, r: number, k: number, a: number): void {
    this.entry(t, r, k, a).duplicates++;
  }
  acceptedFlag(t: number, r: number, k: number, a: number): void {
    this.entry(t, r, k, a).acceptedFlag = true;
  }
  note(kind: string): void {
    this.refusals.set(kind, (this.refusals.get(kind) ?? 0) + 1);
  }
  /** Acknowledged updates of a task: 201, 200 duplicate, or `accepted: true`. */
  acknowledged(taskId: number): LedgerEntry[] {
    return [...this.entries.values()].filter((e) => e.taskId === taskId);
  }
}

interface Job {
  taskId: number;
  rank: number;
  attempt: number;
  round: number;
  uploadUrl: string;
  cancelled: boolean;
}

/** One rank-running client. */
export class ChaosRank {
  readonly client: WorkerClient;
  private readonly jobs = new Map<number, Job>();
  readonly completed = new Set<number>();
  private closed = false;

  constructor(
    private readonly opts: {
      wsUrl: string;
      httpUrl: string;
      token: string;
      id: string;
      ledger: UploadLedger;
      random: () => number;
      /** Longest simulated training time of a round, ms. */
      trainMs: number;
    },
  ) {
    this.client = new WorkerClient({
      url: opts.wsUrl,
      token: opts.token,
      id: opts.id,
      maxTasks: 1,
      systemInfo: () => systemInfo(opts.id),
      backoff: { initialMs: 100, maxMs: 1000 },
      requestTimeoutMs: 5000,
    });
    this.client.on('task', (t) => this.onTask(t));
    this.client.on('round_start', (m) => this.start(m.task_id, m.rank, m.attempt, m));
    this.client.on('training_complete', (m) => {
      this.cancel(m.task_id);
      this.completed.add(m.task_id);
    });
    this.client.on('stop', (c) => this.cancel(c.task_id));
  }

  connect(): Promise<unknown> {
    return this.client.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.jobs.keys()]) this.cancel(id);
    await this.client.close();
  }

  private onTask(task: TaskData): void {
    const t = task.training;
    if (!t) return;
    if (t.accepted) {
      // Already counted (perhaps its 201 was lost with the server): only the flag says so.
      this.opts.ledger.acceptedFlag(task.id, t.round, task.rank, task.attempt);
      const job = this.jobs.get(task.id);
      if (job && job.round === t.round) this.cancel(task.id);
      return;
    }
    this.start(task.id, task.rank, task.attempt, t);
  }

  private cancel(taskId: number): void {
    const job = this.jobs.get(taskId);
    if (job) job.cancelled = true;
    this.jobs.delete(taskId);
  }

  private start(taskId: number, rank: number, attempt: number, t: TrainingData): void {
    const current = this.jobs.get(taskId);
    // The same round and attempt again (a reconnection): the running job carries on.
    if (current && current.round === t.round && current.attempt === attempt) return;
    if (current && current.round > t.round && current.attempt === attempt) return;
    this.cancel(taskId);
    const job: Job = { taskId, rank, attempt, round: t.round, uploadUrl: t.upload_url, cancelled: false };
    this.jobs.set(taskId, job);
    void this.run(job);
  }

  private async run(job: Job): Promise<void> {
    const { ledger } = this.opts;
    await sleep(this.opts.random() * this.opts.trainMs);
    const body = syntheticUpdate(updateValue(job.round, job.rank, job.attempt));
    const url = `${this.opts.httpUrl}${job.uploadUrl}&num_samples=${samplesOf(job.rank)}`;
    // Bounded: a job lives at most a few minutes; a newer round or a stop cancels it.
    for (let i = 0; i < 2000 && !job.cancelled && !this.closed; i++) {
      let status = 0;
      let code = '';
      try {
        const res = await fetch(url, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${this.opts.token}`,
            'content-type': 'application/octet-stream',
            'x-ai-farm-client': this.opts.id,
          },
          body,
          signal: AbortSignal.timeout(15_000),
        });
        status = res.status;
        const text = await res.text();
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '';
        } catch {
          code = '';
        }
      } catch {
        ledger.note('network error');
      }
      if (status === 201) {
        ledger.created(job.taskId, job.round, job.rank, job.attempt);
        break;
      }
      if (status === 200) {
        ledger.duplicate(job.taskId, job.round, job.rank, job.attempt);
        break;
      }
      if (status !== 0) ledger.note(`${status} ${code}`);
      // Stale attempt, closed round, another attempt's update: the server says what is next.
      if (status === 409 && code !== 'client_not_connected' && code !== 'upload_in_progress') break;
      if (status >= 400 && status < 500 && status !== 409 && status !== 429) {
        ledger.note(`unexpected ${status} ${code}`);
        break;
      }
      await sleep(100 + this.opts.random() * 200);
    }
    if (this.jobs.get(job.taskId) === job) this.jobs.delete(job.taskId);
  }
}

/** The F32 tensors of a safetensors file, by name (enough for the synthetic models). */
export function readF32(buf: Buffer): Record<string, number[]> {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const out: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`tensor ${name} is ${t.dtype}, not F32`);
    const [from, to] = t.data_offsets;
    const values: number[] = [];
    for (let o = 8 + n + from; o < 8 + n + to; o += 4) values.push(buf.readFloatLE(o));
    out[name] = values;
  }
  return out;
}

/** One accepted update as the journal (round_updates) records it. */
export interface JournalRow {
  task_id: number;
  round: number;
  rank: number;
  attempt: number;
  num_samples: number;
}

/** The FedAvg aggregate of a round's updates, tensor by tensor. */
export function expectedAggregate(rows: { round: number; rank: number; attempt: number }[]): {
  a: number[];
  b: number[];
} {
  let sum = 0;
  let weight = 0;
  for (const r of rows) {
    const n = samplesOf(r.rank);
    sum += n * updateValue(r.round, r.rank, r.attempt);
    weight += n;
  }
  const mean = sum / weight;
  return { a: PATTERN_A.map((x) => x * mean), b: PATTERN_B.map((x) => x * mean) };
}
