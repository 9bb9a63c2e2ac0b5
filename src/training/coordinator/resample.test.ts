import { describe, expect, it } from 'vitest';
import { planHandOver } from './resample.js';

const pick = (clientId: string) => ({ clientId, reason: 'uniform: test' });

describe('planHandOver', () => {
  it('keeps the clients sampled again on their ranks and gives the free ranks to the new ones', () => {
    const holders = [
      { clientId: 'a', rank: 0 },
      { clientId: 'b', rank: 1 },
    ];
    const plan = planHandOver(holders, [pick('c'), pick('b')]);
    expect(plan.keep).toEqual([{ clientId: 'b', rank: 1 }]);
    expect(plan.leaving).toEqual([{ clientId: 'a', rank: 0 }]);
    expect(plan.joining).toEqual([{ clientId: 'c', rank: 0 }]);
    expect(plan.sampled).toEqual([
      { client_id: 'c', rank: 0, reason: 'uniform: test' },
      { client_id: 'b', rank: 1, reason: 'uniform: test' },
    ]);
  });

  it('a round of fewer ranks (fraction): a client sampled again on a rank beyond them moves to a free one', () => {
    const holders = ['a', 'b', 'c'].map((clientId, rank) => ({ clientId, rank }));
    const plan = planHandOver(holders, [pick('c'), pick('d')]);
    expect(plan.keep).toEqual([]);
    expect(plan.leaving.map((h) => h.clientId)).toEqual(['a', 'b', 'c']);
    expect(plan.joining).toEqual([
      { clientId: 'c', rank: 0 },
      { clientId: 'd', rank: 1 },
    ]);
  });

  it('a rank with no holder (lost, not yet re-placed) is free for a new client', () => {
    const plan = planHandOver([{ clientId: 'a', rank: 1 }], [pick('a'), pick('b')]);
    expect(plan.keep).toEqual([{ clientId: 'a', rank: 1 }]);
    expect(plan.joining).toEqual([{ clientId: 'b', rank: 0 }]);
  });
});
