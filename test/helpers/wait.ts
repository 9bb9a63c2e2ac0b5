/**
 * The one way tests wait (issue 12 point 6): on an event or a polled condition, always
 * bounded, never on the machine being fast.
 */

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

export interface WaitOptions {
  /** Time between two probes; default 100 ms. */
  everyMs?: number;
  /** What to say on a timeout besides the last value: the state that was waited on. */
  state?: () => string | Promise<string>;
}

/**
 * Polls `probe` until it returns a truthy value, and returns that value. After `timeoutMs`
 * (default 20 s) it fails naming `what`, the last value seen and the last error: a probe that
 * throws is tried again (a database or server that is down for a while, by design, in the chaos
 * and outage suites), so its error only fails the test once time is up.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | Promise<T>,
  timeoutMs = 20_000,
  { everyMs = 100, state }: WaitOptions = {},
): Promise<Truthy<T>> {
  const end = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      if (last) return last as Truthy<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > end) {
      const seen = lastError === undefined ? '' : `; last error: ${String(lastError)}`;
      const more = state ? `; ${await state()}` : '';
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)}${seen}${more})`,
      );
    }
    await sleep(everyMs);
  }
}

/**
 * Waits until `read` gives the same value for `quietMs` on end (compared as JSON), and returns
 * it; fails after `ms`. For "it stopped" checks: what was already under way when the stop was
 * asked for (progress in flight, a signal landing, a throttled write) may still change it for a
 * while, longer on a busy machine, but a value that never holds still fails.
 */
export async function holdsStill<T>(
  read: () => Promise<T> | T,
  quietMs: number,
  ms = 20_000,
  what = 'value',
): Promise<T> {
  const end = Date.now() + ms;
  let value = await read();
  let since = Date.now();
  for (;;) {
    await sleep(Math.min(100, quietMs));
    const next = await read();
    if (JSON.stringify(next) !== JSON.stringify(value)) {
      value = next;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return value;
    }
    if (Date.now() > end)
      throw new Error(`${what} still changing after ${ms} ms (last: ${JSON.stringify(value)})`);
  }
}
