/**
 * What the reference FedAvg accumulator (fedavg.ts) and the threaded session (fedavg-session.ts)
 * share around their running sum: calls one at a time, the weight check, the running tally.
 */

/**
 * Runs the calls given to it one after another, even when made concurrently (the sum has one
 * writer, and every thread must see the adds in the same order); once `broken()` names an
 * error, every later call rejects with it.
 */
export function serialCalls(broken: () => Error | undefined): <T>(fn: () => Promise<T>) => Promise<T> {
  let queue: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const guarded = (): Promise<T> => {
      const err = broken();
      return err ? Promise.reject(err) : fn();
    };
    const run = queue.then(guarded, guarded);
    queue = run.catch(() => undefined);
    return run;
  };
}

/** The refusal of a weight that is not a positive number, or undefined for a good one. */
export function invalidWeight(
  weight: number,
): { ok: false; code: 'invalid_weight'; message: string; bytesRead: 0 } | undefined {
  if (Number.isFinite(weight) && weight > 0) return undefined;
  return {
    ok: false,
    code: 'invalid_weight',
    message: `weight ${weight} is not a positive number`,
    bytesRead: 0,
  };
}

/** Accepted updates, their total weight and the body bytes read so far. */
export interface Tally {
  count: number;
  totalWeight: number;
  bytesRead: number;
}

/** The refusal to finish a sum nothing was added to, or undefined when something was. */
export function nothingAdded(tally: Tally): { ok: false; code: 'no_updates'; message: string } | undefined {
  if (tally.count > 0 && tally.totalWeight > 0) return undefined;
  return { ok: false, code: 'no_updates', message: 'no update was added' };
}

/** `fields` with read-only `count`, `totalWeight` and `bytesRead` that read `tally` live. */
export function withTally<T extends object>(tally: Tally, fields: T): T & Readonly<Tally> {
  return Object.defineProperties(fields, {
    count: { get: () => tally.count, enumerable: true },
    totalWeight: { get: () => tally.totalWeight, enumerable: true },
    bytesRead: { get: () => tally.bytesRead, enumerable: true },
  }) as T & Readonly<Tally>;
}
