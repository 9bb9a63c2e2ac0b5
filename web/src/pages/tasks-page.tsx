import type { Task } from '../../../src/api/tasks.js';
import { api } from '../api.js';
import { ErrorNote, Link, Loading, Pager, Progress, StatusBadge } from '../components/ui.js';
import { ago } from '../format.js';
import { REFETCH_MS, useAsync, useThrottled, useTick, useTitle } from '../hooks.js';
import { useLive } from '../live.js';
import { navigate, useLocation, withQuery } from '../router.js';

export const TASK_STATUS_ORDER = [
  'pending',
  'running',
  'paused',
  'completed',
  'failed',
  'error',
  'cancelled',
] as const;
const PAGE_SIZE = 25;

type Page<T> = { items: T[]; total: number; limit: number; offset: number };

/** The task list: filters live in the address, so a filtered view can be bookmarked. */
export function TasksPage() {
  useTitle('Tasks');
  useTick(10_000);
  const { query } = useLocation();
  const status = query.get('status') ?? '';
  const type = query.get('type') ?? '';
  const client = query.get('client_id') ?? '';
  const offset = Math.max(0, Number(query.get('offset')) || 0);
  const url = withQuery('/api/tasks', { status, type, client_id: client, limit: PAGE_SIZE, offset });
  const page = useAsync(() => api<Page<Task>>('GET', url), [url]);
  const refetch = useThrottled(() => void page.reload(), REFETCH_MS);

  // Progress moves in place; anything that may change membership or order refetches.
  useLive('task', (e) => {
    const known = page.data?.items.find((t) => t.id === e.task_id);
    if (known && known.status === e.status) {
      if (e.progress !== undefined)
        page.setData(
          (p) =>
            p && {
              ...p,
              items: p.items.map((t) => (t.id === e.task_id ? { ...t, progress: e.progress as number } : t)),
            },
        );
      return;
    }
    if (known)
      page.setData(
        (p) =>
          p && {
            ...p,
            items: p.items.map((t) =>
              t.id === e.task_id && e.status !== 'deleted' ? { ...t, status: e.status as Task['status'] } : t,
            ),
          },
      );
    refetch();
  });

  const go = (q: Record<string, string | number>) =>
    navigate(withQuery('/tasks', { status, type, client_id: client, ...q }), { replace: false });

  return (
    <div class="page">
      <div class="page-head">
        <h1>Tasks</h1>
        <Link href="/tasks/new" class="button primary">
          New task
        </Link>
      </div>

      <form
        class="filters"
        role="search"
        aria-label="Filter tasks"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          go({ type: String(f.get('type') ?? ''), client_id: String(f.get('client_id') ?? ''), offset: 0 });
        }}
      >
        <div class="field">
          <label for="filter-status">Status</label>
          <select
            id="filter-status"
            value={status}
            onChange={(e) => go({ status: e.currentTarget.value, offset: 0 })}
          >
            <option value="">Any status</option>
            {TASK_STATUS_ORDER.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-type">Type</label>
          <input id="filter-type" name="type" defaultValue={type} placeholder="e.g. train_mnist" key={type} />
        </div>
        <div class="field">
          <label for="filter-client">Client</label>
          <input
            id="filter-client"
            name="client_id"
            defaultValue={client}
            placeholder="client id"
            key={client}
          />
        </div>
        <div class="filter-actions">
          <button type="submit" class="secondary">
            Filter
          </button>
          {status || type || client ? (
            <button type="button" class="link" onClick={() => navigate('/tasks')}>
              Clear
            </button>
          ) : null}
        </div>
      </form>

      <ErrorNote error={page.error} title="Tasks could not be loaded" />
      {!page.data && !page.error ? <Loading what="tasks" /> : null}
      {page.data ? (
        <>
          <TaskTable tasks={page.data.items} />
          {page.data.items.length === 0 ? <p class="empty">No task matches.</p> : null}
          <Pager
            offset={offset}
            limit={PAGE_SIZE}
            total={page.data.total}
            onPage={(o) => go({ offset: o })}
          />
        </>
      ) : null}
    </div>
  );
}

/** A table of tasks; below 720 px each row becomes a card (see styles.css). */
export function TaskTable({ tasks, caption }: { tasks: Task[]; caption?: string }) {
  if (tasks.length === 0) return null;
  return (
    <div class="table-wrap">
      <table class="table responsive">
        {caption ? <caption>{caption}</caption> : null}
        <thead>
          <tr>
            <th scope="col">Task</th>
            <th scope="col">Status</th>
            <th scope="col" class="col-progress">
              Progress
            </th>
            <th scope="col">Client</th>
            <th scope="col">Priority</th>
            <th scope="col">Updated</th>
          </tr>
        </thead>
        <tbody>
          {tasks.map((t) => (
            <tr key={t.id} data-task-id={t.id}>
              <td data-label="Task">
                <Link href={`/tasks/${t.id}`}>
                  <span class="mono">#{t.id}</span> {t.name ?? t.type}
                </Link>
                {t.name ? <div class="muted small">{t.type}</div> : null}
              </td>
              <td data-label="Status">
                <StatusBadge status={t.status} />
              </td>
              <td data-label="Progress" class="col-progress">
                <Progress value={t.progress} label={`Task ${t.id} progress`} status={t.status} />
              </td>
              <td data-label="Client">
                {t.client_id ? (
                  <Link href={`/clients/${encodeURIComponent(t.client_id)}`}>{t.client_id}</Link>
                ) : (
                  <span class="muted">—</span>
                )}
              </td>
              <td data-label="Priority">{t.priority}</td>
              <td data-label="Updated">
                <time dateTime={t.updated_at} title={t.updated_at}>
                  {ago(t.updated_at)}
                </time>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
