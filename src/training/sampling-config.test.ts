import { describe, expect, it } from 'vitest';
import { clientsForRound, sampleRound, samplingOf } from './sampling-config.js';
import { prepareTrainingConfig } from './training-config.js';

const defaults = { defaultEpochs: 1, defaultBatchSize: 8 };
const prepare = (config: Record<string, unknown>, worldSize?: number) =>
  prepareTrainingConfig({ rounds: 2, ...config }, worldSize, defaults);
const refusal = (config: Record<string, unknown>, worldSize?: number) => {
  const out = prepare(config, worldSize);
  if (out.ok) throw new Error(`accepted ${JSON.stringify(config)}`);
  return out.error.message;
};

describe('sampling config', () => {
  it('clients_per_round makes the world size and fills the defaults', () => {
    const out = prepare({ clients_per_round: 10 });
    expect(out.ok && out.worldSize).toBe(10);
    expect(out.ok && out.config).toMatchObject({
      clients_per_round: 10,
      min_available: 10,
      sampling: 'uniform',
      quorum: 10,
    });
    const same = prepare({ clients_per_round: 3, min_available: 5, sampling: 'speed' }, 3);
    expect(same.ok && same.config).toMatchObject({ min_available: 5, sampling: 'speed', speed_floor: 0.1 });
  });

  it('fraction: world_size is the most ranks a round samples; min_available defaults to 1', () => {
    const out = prepare({ fraction: 0.25 }, 8);
    expect(out.ok && out.worldSize).toBe(8);
    expect(out.ok && out.config).toMatchObject({ fraction: 0.25, min_available: 1 });
    const s = samplingOf(out.ok ? out.config : null)!;
    expect(clientsForRound(s, 200, 8)).toBe(8);
    expect(clientsForRound(s, 10, 8)).toBe(3);
    expect(clientsForRound({ ...s, min_available: 4 }, 10, 8)).toBe(4);
  });

  it('with over_select, a round samples K plus the extras and closes on K updates', () => {
    const out = prepare({ clients_per_round: 4, over_select: 2 });
    expect(out.ok && out.worldSize).toBe(6);
    expect(out.ok && out.config).toMatchObject({ min_available: 6, quorum: 4 });
    const s = samplingOf(out.ok ? out.config : null)!;
    expect(clientsForRound(s, 50, 6)).toBe(6);
    // A fraction of over-selection: ceil(0.5 x 4) = 2 extra.
    const half = prepare({ clients_per_round: 4, over_select: 0.5 });
    expect(half.ok && half.worldSize).toBe(6);
    expect(refusal({ clients_per_round: 4, over_select: 1 }, 4)).toMatch(
      /clients_per_round \(4\) contradicts body\/world_size \(4\).*plus over_select's 1 \(5\)/,
    );
    expect(refusal({ clients_per_round: 4, over_select: 1, min_available: 4 })).toMatch(/min_available/);
    // fraction: 0.1 x 60 = 6 clients, plus ceil(0.5 x 6) = 3, at most world_size 8.
    const f = samplingOf({ fraction: 0.1, over_select: 0.5, min_available: 1 })!;
    expect(clientsForRound(f, 60, 20)).toBe(9);
    expect(clientsForRound(f, 60, 8)).toBe(8);
  });

  it('refuses contradictions and bad values with a 400 naming the field', () => {
    expect(refusal({ clients_per_round: 2, fraction: 0.5 }, 4)).toMatch(
      /body\/config\/fraction and body\/config\/clients_per_round cannot both be given/,
    );
    expect(refusal({ clients_per_round: 2, mode: 'async' })).toMatch(
      /body\/config\/clients_per_round applies only with mode "sync"/,
    );
    expect(refusal({ fraction: 0.5, mode: 'async' }, 4)).toMatch(/fraction applies only with mode "sync"/);
    expect(refusal({ clients_per_round: 2 }, 3)).toMatch(
      /clients_per_round \(2\) contradicts body\/world_size \(3\)/,
    );
    expect(refusal({ clients_per_round: 3, min_available: 2 })).toMatch(
      /min_available \(2\) must be at least/,
    );
    expect(refusal({ clients_per_round: 0 })).toMatch(/body\/config\/clients_per_round must be >= 1/);
    expect(refusal({ fraction: 0 }, 4)).toMatch(/body\/config\/fraction must be > 0/);
    expect(refusal({ fraction: 1.5 }, 4)).toMatch(/body\/config\/fraction must be <= 1/);
    expect(refusal({ fraction: 0.5 })).toMatch(/fraction needs body\/world_size/);
    expect(refusal({ fraction: 0.5, min_available: 5 }, 4)).toMatch(/min_available \(5\) must be at most/);
    expect(refusal({ min_available: 2 })).toMatch(
      /needs body\/config\/clients_per_round or body\/config\/fraction/,
    );
    expect(refusal({ clients_per_round: 2, sampling: 'fastest' })).toMatch(/body\/config\/sampling/);
    expect(refusal({ clients_per_round: 2, speed_floor: 0.2 })).toMatch(
      /speed_floor is used only by sampling "speed"/,
    );
    expect(refusal({ clients_per_round: 2, sampling: 'speed', speed_floor: 0 })).toMatch(
      /speed_floor must be > 0/,
    );
  });

  it('a round waits for min_available eligible clients, then samples its clients', () => {
    const s = samplingOf({ clients_per_round: 2, min_available: 3 })!;
    const two = [{ id: 'a' }, { id: 'b' }];
    expect(sampleRound(s, 0, 1, two, 2)).toBeNull();
    const picks = sampleRound(s, 0, 1, [...two, { id: 'c' }], 2)!;
    expect(picks).toHaveLength(2);
    expect(picks[0]).toMatchObject({ method: 'uniform', eligible: 3, reason: 'uniform: 2 of 3 eligible' });
  });
});
