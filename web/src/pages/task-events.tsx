import { useEffect, useState } from 'preact/hooks';
import type { TaskEvent } from '../../../src/api/tasks.js';
import { api } from '../api.js';
import { ErrorNote } from '../components/ui.js';
import { ago, dateTime } from '../format.js';

/** Events per request: the newest page, reloaded live, and each older page asked for. */
export const EVENTS_PAGE = 200;

/** Newest first, each id once. */
function merge(a: readonly TaskEvent[], b: readonly TaskEvent[]): TaskEvent[] {
  const byId = new Map<number, TaskEvent>();
  for (const e of a) byId.set(e.id, e);
  for (const e of b) byId.set(e.id, e);
  return [...byId.values()].sort((x, y) => y.id - x.id);
}

/**
 * A task's events: `head` is the newest page (reloaded by the task page as things happen);
 * "Show older events" pages back with `before` (GET /api/tasks/{id}/events). Once older pages
 * are shown, every head the page reloads is kept too, so events that move out of the newest
 * page while it is open stay listed (no gap between the head and the older pages).
 */
export function TaskEvents({ id, head }: { id: number; head: TaskEvent[] | undefined }) {
  const [older, setOlder] = useState<{ items: TaskEvent[]; done: boolean } | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => setOlder(null), [id]);
  useEffect(() => {
    if (head) setOlder((o) => o && { ...o, items: merge(o.items, head) });
  }, [head]);

  const shown = merge(head ?? [], older?.items ?? []);
  const more = older ? !older.done : (head?.length ?? 0) >= EVENTS_PAGE;
  const loadOlder = async () => {
    const before = shown[shown.length - 1]?.id;
    if (before === undefined) return;
    setLoading(true);
    setError(null);
    try {
      const page = await api<{ items: TaskEvent[] }>(
        'GET',
        `/api/tasks/${id}/events?limit=${EVENTS_PAGE}&before=${before}`,
      );
      setOlder((o) => ({
        items: merge(merge(o?.items ?? [], head ?? []), page.items),
        done: page.items.length < EVENTS_PAGE,
      }));
    } catch (err) {
      setError(err);
    } finally {
      setLoading(false);
    }
  };

  return (
    <>
      <ol class="events" aria-label="Task events, newest first">
        {shown.map((e) => (
          <li key={e.id} class={`event event-${e.kind}`}>
            <time dateTime={e.at} title={dateTime(e.at)}>
              {ago(e.at)}
            </time>
            <span class="event-kind">{e.kind}</span>
            <span class="event-msg">{e.message}</span>
          </li>
        ))}
      </ol>
      <ErrorNote error={error} />
      {more ? (
        <button type="button" class="secondary" disabled={loading} onClick={() => void loadOlder()}>
          {loading ? 'Loading older events…' : 'Show older events'}
        </button>
      ) : older && shown.length > 0 ? (
        <p class="muted small">All {shown.length} events shown.</p>
      ) : null}
    </>
  );
}
