import { useEffect, useRef, useState } from 'preact/hooks';
import type { PanelEventName, PanelEvents } from '../../src/api/overview.js';

/**
 * The live stream (GET /api/events): one EventSource for the whole panel, shared by every
 * page through `useLive`. EventSource reconnects by itself after a dropped connection; a
 * refused one (ended session) is reported through `onEnded`.
 */
export type LiveState = 'connecting' | 'live' | 'offline';

type Handler<E extends PanelEventName> = (data: PanelEvents[E]) => void;
const handlers: { [E in PanelEventName]: Set<Handler<E>> } = {
  task: new Set(),
  client: new Set(),
  overview: new Set(),
};
const stateListeners = new Set<(s: LiveState) => void>();
let source: EventSource | null = null;
let state: LiveState = 'offline';
let retryTimer: ReturnType<typeof setTimeout> | undefined;
/** The last overview, so a page opened later starts with data. */
let lastOverview: PanelEvents['overview'] | null = null;

function setState(s: LiveState): void {
  state = s;
  for (const l of stateListeners) l(s);
}

/** Opens the stream; `onEnded` runs when the server refuses it (for example after logout elsewhere). */
export function connectLive(onEnded: () => void): void {
  disconnectLive();
  setState('connecting');
  const es = new EventSource('/api/events');
  source = es;
  es.onopen = () => setState('live');
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (401, or the server is gone): ask the app to check the session, then retry.
      setState('offline');
      source = null;
      retryTimer = setTimeout(onEnded, 3000);
    } else setState('connecting');
  };
  for (const name of Object.keys(handlers) as PanelEventName[]) {
    es.addEventListener(name, (e) => {
      const data = JSON.parse((e as MessageEvent<string>).data) as PanelEvents[typeof name];
      if (name === 'overview') lastOverview = mergeOverview(lastOverview, data as PanelEvents['overview']);
      for (const h of handlers[name] as Set<Handler<typeof name>>) h(data);
    });
  }
}

export function disconnectLive(): void {
  if (retryTimer) clearTimeout(retryTimer);
  source?.close();
  source = null;
  lastOverview = null;
  setState('offline');
}

/** Keeps the throughput history: full events replace it, others append their newest point. */
export function mergeOverview(
  prev: PanelEvents['overview'] | null,
  next: PanelEvents['overview'],
): PanelEvents['overview'] {
  if (next.full || !prev) return next;
  const seen = new Set(prev.throughput.map((p) => p.at));
  const throughput = [...prev.throughput, ...next.throughput.filter((p) => !seen.has(p.at))].slice(-720);
  return { ...next, throughput, full: false };
}

export function latestOverview(): PanelEvents['overview'] | null {
  return lastOverview;
}

/** Calls `handler` for every event of this name while the component is mounted. */
export function useLive<E extends PanelEventName>(event: E, handler: Handler<E>): void {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    const h: Handler<E> = (d) => ref.current(d);
    (handlers[event] as Set<Handler<E>>).add(h);
    return () => void (handlers[event] as Set<Handler<E>>).delete(h);
  }, [event]);
}

export function useLiveState(): LiveState {
  const [s, setS] = useState(state);
  useEffect(() => {
    stateListeners.add(setS);
    return () => void stateListeners.delete(setS);
  }, []);
  return s;
}
