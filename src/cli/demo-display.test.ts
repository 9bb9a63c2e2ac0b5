import { describe, expect, it } from 'vitest';
import { LinesDisplay, roundOf, withinRound } from './demo-display.js';

describe('demo display', () => {
  it('reads a rank’s round and its progress in it from the task percentage', () => {
    expect([0, 10, 19.6, 20, 79, 80, 100].map((p) => roundOf(p, 5))).toEqual([1, 1, 1, 2, 4, 5, 5]);
    expect([0, 10, 20, 30, 100].map((p) => Math.round(withinRound(p, 5)))).toEqual([0, 50, 0, 50, 100]);
  });

  it('prints one line per rank and round, and one per closed round', () => {
    const lines: string[] = [];
    const d = new LinesDisplay((l) => lines.push(l));
    const ranks = (p: number) => [0, 1].map((rank) => ({ rank, progress: p, status: 'training' }));
    d.update({ status: 'running', rounds: 2, ranks: ranks(10), closed: [] });
    d.update({ status: 'running', rounds: 2, ranks: ranks(20), closed: [] });
    d.update({
      status: 'running',
      rounds: 2,
      ranks: ranks(60),
      closed: [{ round: 1, heldoutAccuracy: 0.9 }],
    });
    expect(lines).toEqual([
      'task running',
      'rank 0: round 1/2 (10%)',
      'rank 1: round 1/2 (10%)',
      'rank 0: round 2/2 (60%)',
      'rank 1: round 2/2 (60%)',
      'round 1/2 closed: held-out accuracy 90.0%, loss -',
    ]);
  });
});
