import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export interface Async<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  /** Loads again, keeping the current data on screen meanwhile. */
  reload: () => Promise<void>;
  setData: (update: (prev: T | undefined) => T | undefined) => void;
}

/** Loads data when `deps` change; stale answers (from older deps) are dropped. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): Async<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const loader = useRef(load);
  loader.current = load;

  const reload = useCallback(async () => {
    const gen = ++generation.current;
    setLoading(true);
    try {
      const d = await loader.current();
      if (gen === generation.current) {
        setDataState(d);
        setError(undefined);
      }
    } catch (err) {
      if (gen === generation.current) setError(err);
    } finally {
      if (gen === generation.current) setLoading(false);
    }
  }, []);

  useEffect(() => {
    setDataState(undefined);
    void reload();
    // Dependencies are the caller's: the loader itself changes every render.
  }, deps);

  return { data, error, loading, reload, setData: (u) => setDataState(u) };
}

/**
 * How often a page may reload a list after live events, and its slowly changing history
 * (metrics, rounds). The server limits each address to RATE_LIMIT (60/minute by default),
 * shared with whatever else runs there; the panel stays near 20 requests a minute.
 */
export const REFETCH_MS = 4000;
export const HISTORY_MS = 10_000;

/**
 * Runs `fn` at most once per `ms`, trailing: many live events in a burst cost one request,
 * which also keeps the panel well inside the server's per-address rate limit.
 */
export function useThrottled(fn: () => void, ms: number): () => void {
  const ref = useRef(fn);
  ref.current = fn;
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const last = useRef(0);
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    if (timer.current) return;
    const wait = Math.max(0, last.current + ms - Date.now());
    timer.current = setTimeout(() => {
      timer.current = undefined;
      last.current = Date.now();
      ref.current();
    }, wait);
  }, [ms]);
}

/** Re-renders every `ms`, for "3 s ago" labels. */
export function useTick(ms: number): number {
  const [n, setN] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setN((x) => x + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
  return n;
}

/** Sets the document title while a page is shown. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = `${title} · AI Farm`;
  }, [title]);
}
