import { describe, expect, it } from 'vitest';
import type { TaskFate } from '../storage/lifecycle-repo.js';
import { decideAfterFailure, ranksToReplace, resultOf, systemFrom } from './lifecycle-decisions.js';

const lease = { attempt: 2, clientId: 'c1', rank: 0 };
const fate = (over: Partial<TaskFate> = {}): TaskFate => ({
  status: 'running',
  attempts: 2,
  max_attempts: 3,
  error_log: null,
  world_size: 1,
  ...over,
});

describe('the retry-or-fail decision', () => {
  it('puts a single-rank task back in the queue while it has attempts left', () => {
    const d = decideAfterFailure(lease, 'failed', 'boom', fate());
    expect(d).toMatchObject({
      kind: 'retry',
      errorLog: 'attempt 2 on c1 (rank 0): failed: boom',
      event: {
        kind: 'retry',
        message: 'attempt 2 on c1 (rank 0): failed: boom; retrying (2/3 attempts used)',
      },
    });
  });

  it('fails a single-rank task whose attempts are used up, as error when it could not run', () => {
    const failed = decideAfterFailure(lease, 'failed', null, fate({ attempts: 3, error_log: 'earlier' }));
    expect(failed).toMatchObject({
      kind: 'fail',
      status: 'failed',
      errorLog: 'earlier\nattempt 2 on c1 (rank 0): failed\ngave up after 3 of 3 attempts',
      event: { kind: 'failed', data: { attempt: 2, client_id: 'c1', outcome: 'failed' } },
    });
    expect(decideAfterFailure(lease, 'error', 'bad config', fate({ attempts: 3 }))).toMatchObject({
      kind: 'fail',
      status: 'error',
      event: { kind: 'error' },
    });
  });

  it('counts a multi-rank task per rank: the rank is re-placed until its own attempts run out', () => {
    const many = fate({ world_size: 4, attempts: 9 });
    expect(decideAfterFailure({ ...lease, rank: 3 }, 'lost', null, many)).toMatchObject({
      kind: 'replace_rank',
      errorLog: 'attempt 2 on c1 (rank 3): client lost',
      event: { kind: 'rank_retry', data: { rank: 3, outcome: 'lost' } },
    });
    expect(decideAfterFailure({ ...lease, attempt: 3 }, 'lost', 'gone', many)).toMatchObject({
      kind: 'fail',
      status: 'failed',
      errorLog: 'attempt 3 on c1 (rank 0): gone\ngave up after 3 of 3 attempts',
    });
  });

  it('does not count the attempts of a rank that a sampled round handed to another client', () => {
    const many = fate({ world_size: 4 });
    // Attempt 3, after two hand-overs: the first failure of the rank.
    const d = decideAfterFailure({ ...lease, attempt: 3 }, 'lost', null, many, 2);
    expect(d).toMatchObject({ kind: 'replace_rank', errorLog: 'attempt 3 on c1 (rank 0): client lost' });
    expect(d.event.message).toMatch(/\(1\/3 attempts used\)$/);
    expect(decideAfterFailure({ ...lease, attempt: 5 }, 'lost', null, many, 2).kind).toBe('fail');
  });

  it('re-places the rank of a paused multi-rank task when it resumes, while it has attempts', () => {
    const paused = fate({ world_size: 2, status: 'paused' });
    const d = decideAfterFailure(lease, 'lost', null, paused);
    expect(d.kind).toBe('replace_rank');
    expect(d.event.message).toMatch(/re-placing rank 0 when the task resumes \(2\/3 attempts used\)$/);
    expect(decideAfterFailure({ ...lease, attempt: 3 }, 'lost', null, paused).kind).toBe('fail');
  });

  it("names the ranks to re-place by each rank's newest assignment", () => {
    const a = (rank: number, attempt: number, status: string) => ({ rank, attempt, status });
    const rows = [
      a(0, 1, 'lost'),
      a(0, 2, 'paused'), // re-placed already and held
      a(1, 1, 'lost'),
      a(2, 1, 'failed'),
      a(3, 1, 'training'),
      a(3, 2, 'cancelled'), // handed over by a sampled round (attempt order, not row order)
      a(4, 1, 'completed'),
    ];
    expect(ranksToReplace(rows)).toEqual([1, 2]);
    expect(ranksToReplace([])).toEqual([]);
  });

  it('places again, uncounted, a task that never reached its client, whatever the attempts used', () => {
    const spent = fate({ attempts: 3, max_attempts: 3, error_log: 'earlier' });
    const one = decideAfterFailure(lease, 'undelivered', 'client c1 left', spent);
    expect(one).toMatchObject({ kind: 'retry', uncount: true, errorLog: 'earlier' });
    expect(one.event).toMatchObject({ kind: 'retry', data: { outcome: 'undelivered' } });
    expect(one.event.message).toMatch(/never reached it \(client c1 left\); placing it again, not counted$/);
    const many = decideAfterFailure(lease, 'undelivered', null, fate({ world_size: 2, attempts: 9 }));
    expect(many).toMatchObject({ kind: 'replace_rank', event: { kind: 'rank_retry', data: { rank: 0 } } });
    expect(many).not.toHaveProperty('uncount');
  });

  it('keeps only the end of a long error', () => {
    const d = decideAfterFailure(lease, 'failed', `${'x'.repeat(5000)}END`, fate());
    expect(d.errorLog?.length).toBeLessThan(2100);
    expect(d.errorLog?.endsWith('END')).toBe(true);
  });
});

describe('the guard and the result', () => {
  it('refuses a write the state machine does not give the server', () => {
    expect(systemFrom(['running', 'paused'], 'completed')).toEqual(['running', 'paused']);
    expect(() => systemFrom(['cancelled'], 'pending')).toThrow(/cancelled to pending/);
    expect(() => systemFrom(['completed'], 'failed')).toThrow();
  });

  it('puts the metrics beside the reported result', () => {
    expect(JSON.parse(resultOf({ metrics: { loss: 1 }, result: { out: 'a' }, error_log: null }))).toEqual({
      metrics: { loss: 1 },
      out: 'a',
    });
    expect(JSON.parse(resultOf({ error_log: null }))).toEqual({ metrics: null });
  });
});
