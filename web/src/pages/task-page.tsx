import { useState } from 'preact/hooks';
import type {
  AssignmentView,
  Task,
  TaskEvent,
  TaskLogLine,
  TaskMetricsView,
} from '../../../src/api/tasks.js';
import type { CurrentRoundView } from '../../../src/training/training-api.js';
import { api, errorMessage, isMissingRoute } from '../api.js';
import {
  ConfirmButton,
  ErrorNote,
  Facts,
  Link,
  Loading,
  Pending,
  Progress,
  Section,
  StatusBadge,
} from '../components/ui.js';
import { ago, dateTime, duration, json, obj } from '../format.js';
import { HISTORY_MS, useAsync, useThrottled, useTick, useTitle, type Async } from '../hooks.js';
import { useLive } from '../live.js';
import { navigate } from '../router.js';
import { EVENTS_PAGE, TaskEvents } from './task-events.js';
import { TrainingChart } from './task-training.js';

/** What a status change button does, by current status (the API's USER_TRANSITIONS). */
const CONTROLS: Record<string, [label: string, to: string][]> = {
  pending: [['Pause', 'paused']],
  running: [['Pause', 'paused']],
  paused: [['Resume', 'running']],
  failed: [['Retry', 'pending']],
  error: [['Retry', 'pending']],
  cancelled: [['Retry', 'pending']],
  completed: [],
};
const CANCELLABLE = new Set(['pending', 'running', 'paused']);

/** A training task: its config asks for rounds (docs/training.md). */
const isTraining = (t: Task | undefined) => !!t && obj(t.config).rounds !== undefined;

/** Loads `path`, answering undefined when this server has no such route yet. */
async function optional<T>(path: string): Promise<{ data?: T; missing: boolean }> {
  try {
    return { data: await api<T>('GET', path), missing: false };
  } catch (err) {
    if (isMissingRoute(err)) return { missing: true };
    throw err;
  }
}

export function TaskPage({ id }: { id: number }) {
  useTick(5000);
  const task = useAsync(() => api<Task>('GET', `/api/tasks/${id}`), [id]);
  const events = useAsync(
    () => api<{ items: TaskEvent[] }>('GET', `/api/tasks/${id}/events?limit=${EVENTS_PAGE}`),
    [id],
  );
  const logs = useAsync(() => api<{ items: TaskLogLine[] }>('GET', `/api/tasks/${id}/logs?limit=500`), [id]);
  const assignments = useAsync(
    () => optional<{ items: AssignmentView[] }>(`/api/tasks/${id}/assignments`),
    [id],
  );
  const metrics = useAsync(() => optional<TaskMetricsView>(`/api/tasks/${id}/metrics`), [id]);
  // The open round of a training task; 404 until its first round opens (or on older servers).
  const training = isTraining(task.data);
  const current = useAsync(
    async () =>
      training
        ? api<CurrentRoundView>('GET', `/api/tasks/${id}/rounds/current`).catch(() => undefined)
        : undefined,
    [id, training],
  );
  const [deleted, setDeleted] = useState(false);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState<string | null>(null);
  useTitle(task.data ? `Task #${id} ${task.data.name ?? task.data.type}` : `Task #${id}`);

  const refreshAll = useThrottled(() => {
    void task.reload();
    void events.reload();
    void logs.reload();
    void assignments.reload();
    void metrics.reload();
    if (isTraining(task.data)) void current.reload();
  }, 2000);
  const refreshMetrics = useThrottled(() => {
    void metrics.reload();
    void logs.reload();
    void assignments.reload();
    if (isTraining(task.data)) void current.reload();
  }, HISTORY_MS);

  useLive('task', (e) => {
    if (e.task_id !== id) return;
    if (e.status === 'deleted') return setDeleted(true);
    const t = task.data;
    if (t && e.status === t.status && e.progress !== undefined) {
      task.setData((p) => p && { ...p, progress: e.progress as number });
      refreshMetrics();
    } else refreshAll();
  });

  const act = async (label: string, fn: () => Promise<unknown>) => {
    setBusy(label);
    setActionError(null);
    try {
      await fn();
    } catch (err) {
      setActionError(err);
    } finally {
      setBusy(null);
    }
  };
  const setStatus = (label: string, status: string) =>
    act(label, async () => {
      const t = await api<Task>('PUT', `/api/tasks/${id}/status`, { status });
      task.setData(() => t);
      void events.reload();
    });

  if (deleted)
    return (
      <div class="page">
        <h1>Task #{id}</h1>
        <p class="note note-info" role="status">
          This task was deleted. <Link href="/tasks">Back to the tasks</Link>
        </p>
      </div>
    );
  if (task.error)
    return (
      <div class="page">
        <ErrorNote error={task.error} title={`Task #${id}`} />
      </div>
    );
  const t = task.data;
  if (!t)
    return (
      <div class="page">
        <Loading what={`task #${id}`} />
      </div>
    );

  const elapsed = t.started_at
    ? ((t.finished_at ? Date.parse(t.finished_at) : Date.now()) - Date.parse(t.started_at)) / 1000
    : null;
  const eta =
    t.status === 'running' && elapsed !== null && t.progress > 0 && t.progress < 100
      ? (elapsed * (100 - t.progress)) / t.progress
      : null;
  const m = obj(t.metrics);
  const showTraining =
    isTraining(t) ||
    /train/i.test(t.type) ||
    'loss' in m ||
    'current_loss' in m ||
    'accuracy' in m ||
    !!metrics.data?.data?.items.some((s) => 'loss' in s.metrics || 'current_loss' in s.metrics);

  return (
    <div class="page">
      <p class="crumbs">
        <Link href="/tasks">Tasks</Link> / #{t.id}
      </p>
      <div class="page-head">
        <div class="title-line">
          <h1>
            <span class="mono">#{t.id}</span> {t.name ?? t.type}
          </h1>
          <StatusBadge status={t.status} />
        </div>
      </div>

      <div class="task-progress">
        <Progress value={t.progress} label={`Task ${t.id} progress`} status={t.status} />
        <span class="muted small">
          {elapsed !== null ? `${duration(elapsed)} ${t.finished_at ? 'in all' : 'so far'}` : 'not started'}
          {eta !== null ? ` · about ${duration(eta)} left` : ''}
        </span>
      </div>

      <div class="toolbar" role="group" aria-label="Task controls">
        {(CONTROLS[t.status] ?? []).map(([label, to]) => (
          <button
            key={label}
            type="button"
            class="primary"
            disabled={busy !== null}
            onClick={() => void setStatus(label, to)}
          >
            {busy === label ? `${label}…` : label}
          </button>
        ))}
        {CANCELLABLE.has(t.status) ? (
          <ConfirmButton
            label="Cancel task"
            confirmLabel="Yes, cancel it"
            class="secondary"
            disabled={busy !== null}
            onConfirm={() => setStatus('Cancel', 'cancelled')}
          />
        ) : null}
        {isTraining(t) ? <DownloadModel task={t} /> : null}
        <ConfirmButton
          label="Delete"
          confirmLabel="Yes, delete it"
          disabled={busy !== null}
          onConfirm={() =>
            act('Delete', async () => {
              await api('DELETE', `/api/tasks/${id}`);
              navigate('/tasks');
            })
          }
        />
      </div>
      <ErrorNote error={actionError} title="That did not work" />
      {t.unschedulable_reason ? (
        <p class="note note-warn" role="status">
          No client can run this task: {t.unschedulable_reason}
        </p>
      ) : null}
      {t.error_log ? (
        <Section title="Errors">
          <pre class="log log-error">{t.error_log}</pre>
        </Section>
      ) : null}

      <div class="grid-2">
        <Section title="Details">
          <Facts
            items={[
              ['Type', <span class="mono">{t.type}</span>],
              ['Priority', t.priority],
              ['Attempts', `${t.attempts} of ${t.max_attempts}`],
              ['Ranks', t.world_size],
              [
                'Client',
                t.client_id ? (
                  <Link href={`/clients/${encodeURIComponent(t.client_id)}`}>{t.client_id}</Link>
                ) : (
                  '—'
                ),
              ],
              ['Created', `${dateTime(t.created_at)}${t.created_by ? ` by ${t.created_by}` : ''}`],
              ['Started', dateTime(t.started_at)],
              ['Finished', dateTime(t.finished_at)],
              ['Checkpoint', t.checkpoint_path ? <span class="mono">{t.checkpoint_path}</span> : '—'],
            ]}
          />
        </Section>
        <Section title="Requirements">
          {Object.keys(t.requirements).length ? (
            <Facts
              items={Object.entries(t.requirements).map(([k, v]) => [k.replace(/_/g, ' '), String(v)])}
            />
          ) : (
            <p class="muted">None: any client may run it.</p>
          )}
          <h3>Config</h3>
          <pre class="code">{t.config ? json(t.config) : 'none'}</pre>
        </Section>
      </div>

      <Section title="Assignments by rank">
        <Assignments state={assignments} />
      </Section>

      {showTraining ? (
        <Section title="Training">
          <ErrorNote error={metrics.error} />
          <TrainingChart
            task={t}
            metrics={metrics.data?.data}
            current={current.data}
            events={events.data?.items}
            missing={!!metrics.data?.missing}
          />
        </Section>
      ) : null}

      {t.metrics && Object.keys(t.metrics).length ? (
        <Section title="Latest metrics">
          <Facts
            items={Object.entries(t.metrics)
              .slice(0, 24)
              .map(([k, v]) => [
                k,
                typeof v === 'object' ? (
                  <span class="mono small">{JSON.stringify(v).slice(0, 120)}</span>
                ) : typeof v === 'number' && !Number.isInteger(v) ? (
                  String(+v.toFixed(4))
                ) : (
                  String(v)
                ),
              ])}
          />
        </Section>
      ) : null}
      {t.result ? (
        <Section title="Result">
          <pre class="code">{json(t.result)}</pre>
        </Section>
      ) : null}

      <Section title="Logs">
        <ErrorNote error={logs.error} />
        {logs.data && logs.data.items.length === 0 ? (
          <p class="muted">No output yet: workers send what the task prints (newest 500 lines shown).</p>
        ) : (
          <pre class="code logs" aria-label="Task output, oldest first" tabIndex={0}>
            {logs.data?.items.map((l) => `[rank ${l.rank} #${l.attempt}] ${l.line}`).join('\n')}
          </pre>
        )}
      </Section>

      <Section title="Events">
        <ErrorNote error={events.error} />
        <TaskEvents id={id} head={events.data?.items} />
      </Section>
    </div>
  );
}

function Assignments({ state }: { state: Async<{ data?: { items: AssignmentView[] }; missing: boolean }> }) {
  if (state.error) return <ErrorNote error={state.error} />;
  if (!state.data) return <Loading />;
  if (state.data.missing)
    return (
      <Pending>
        This server does not list assignments yet (GET /api/tasks/{'{id}'}/assignments); they appear here once
        it does.
      </Pending>
    );
  const items = [...(state.data.data?.items ?? [])].sort((a, b) => a.rank - b.rank || b.attempt - a.attempt);
  if (!items.length) return <p class="muted">No client has taken this task yet.</p>;
  return (
    <div class="table-wrap">
      <table class="table responsive">
        <thead>
          <tr>
            <th scope="col">Rank</th>
            <th scope="col">Client</th>
            <th scope="col">Status</th>
            <th scope="col">Attempt</th>
            <th scope="col" class="col-progress">
              Progress
            </th>
            <th scope="col">Updated</th>
          </tr>
        </thead>
        <tbody>
          {items.map((a) => (
            <tr key={a.id} class={a.error ? 'has-error' : ''}>
              <td data-label="Rank">{a.rank}</td>
              <td data-label="Client">
                <Link href={`/clients/${encodeURIComponent(a.client_id)}`}>{a.client_id}</Link>
              </td>
              <td data-label="Status">
                <StatusBadge status={a.status} />
                {a.error ? <div class="field-error small">{a.error}</div> : null}
              </td>
              <td data-label="Attempt">{a.attempt}</td>
              <td data-label="Progress" class="col-progress">
                <Progress
                  value={a.progress}
                  label={`Rank ${a.rank} attempt ${a.attempt} progress`}
                  status={a.status}
                />
              </td>
              <td data-label="Updated">{ago(a.updated_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/**
 * The trained model, when the server offers it at GET /api/tasks/{id}/model (a later
 * server version): the link works with the session cookie.
 */
function DownloadModel({ task }: { task: Task }) {
  const probe = useAsync(async () => {
    // Only a completed training task has a final model (GET /api/tasks/{id}/model).
    if (task.status !== 'completed') return false;
    const res = await fetch(`/api/tasks/${task.id}/model`, { method: 'HEAD', credentials: 'same-origin' });
    return res.ok;
  }, [task.id, task.status]);
  if (probe.data)
    return (
      <a class="button secondary" href={`/api/tasks/${task.id}/model`} download>
        Download model
      </a>
    );
  const why = probe.error
    ? errorMessage(probe.error)
    : task.status === 'completed'
      ? 'This server offers no model download for this task.'
      : 'The model can be downloaded once the task has completed.';
  return (
    <button type="button" class="secondary" disabled title={why} aria-describedby={`model-why-${task.id}`}>
      Download model
      <span id={`model-why-${task.id}`} class="sr-only">
        {why}
      </span>
    </button>
  );
}
