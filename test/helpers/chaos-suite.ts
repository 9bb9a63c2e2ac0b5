import { afterAll, afterEach } from 'vitest';
import { chaosSeed, formatSummary, seededRandom, type ChaosFigure } from './chaos.js';

/**
 * What the chaos suites (chaos-*.test.ts) share: the seeded PRNG (CHAOS_SEED replays a
 * file's run), the figures of the summary, and the cleanups after each case.
 * docs/operations.md, "Chaos suite".
 */
export const SEED = chaosSeed();
export const random = seededRandom(SEED);
export const figures: ChaosFigure[] = [];

export const cleanups: (() => Promise<unknown>)[] = [];
/** What to print when a case fails: worker outputs, server logs. */
export const diagnostics: (() => string)[] = [];

/**
 * Prints the seed, runs (and empties) the cleanups after each case, printing the diagnostics
 * of a failed one, and prints the summary at the end: called once by each chaos suite file.
 */
export function chaosHooks(): void {
  console.info(`chaos suite: CHAOS_SEED=${SEED}`);
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') for (const d of diagnostics.splice(0)) console.info(d());
    diagnostics.length = 0;
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });
  afterAll(() => {
    console.info(formatSummary(SEED, figures));
  });
}
