import { useMemo, useState } from 'preact/hooks';
import type { Overview } from '../../../src/api/overview.js';
import type { Task } from '../../../src/api/tasks.js';
import { api } from '../api.js';
import { LineChart } from '../components/chart.js';
import { ErrorNote, Link, Loading, Meter, Progress, Section, StatusBadge } from '../components/ui.js';
import { ago, percent } from '../format.js';
import { REFETCH_MS, useAsync, useThrottled, useTick, useTitle } from '../hooks.js';
import { latestOverview, useLive } from '../live.js';
import { TASK_STATUS_ORDER } from './tasks-page.js';

type Page<T> = { items: T[]; total: number };

/** The farm at a glance; everything on it follows the live stream. */
export function OverviewPage() {
  useTitle('Overview');
  useTick(5000);
  const initial = useAsync(async () => latestOverview() ?? (await api<Overview>('GET', '/api/overview')), []);
  // live.ts keeps the merged stream (full history on connect, then newest points).
  const [live, setLive] = useState<Overview | null>(latestOverview);
  useLive('overview', () => setLive(latestOverview()));
  const ov = live ?? initial.data;

  const running = useAsync(() => api<Page<Task>>('GET', '/api/tasks?status=running&limit=8'), []);
  const refetchRunning = useThrottled(() => void running.reload(), REFETCH_MS);
  useLive('task', (e) => {
    const known = running.data?.items.find((t) => t.id === e.task_id);
    if (known && e.status === known.status && e.progress !== undefined) {
      running.setData(
        (p) =>
          p && {
            ...p,
            items: p.items.map((t) => (t.id === e.task_id ? { ...t, progress: e.progress as number } : t)),
          },
      );
    } else if (known || e.status === 'running') refetchRunning();
  });

  const chart = useMemo(() => {
    const points = ov?.throughput ?? [];
    return {
      x: points.map((p) => Date.parse(p.at) / 1000),
      ys: [points.map((p) => p.completed_per_min), points.map((p) => p.failed_per_min)],
    };
  }, [ov?.throughput]);

  if (!ov)
    return initial.error ? (
      <ErrorNote error={initial.error} title="The overview could not be loaded" />
    ) : (
      <Loading what="the overview" />
    );
  const m = ov.metrics;
  const gpuMean = m.gpu_utilization.length
    ? m.gpu_utilization.reduce((a, g) => a + g.utilization, 0) / m.gpu_utilization.length
    : null;

  return (
    <div class="page">
      <div class="page-head">
        <h1>Overview</h1>
        <span class="muted small">
          {ov.server
            ? `Server host: CPU ${percent(ov.server.cpu_utilization)} · RAM ${percent(ov.server.ram_utilization)} · `
            : ''}
          updated {ago(ov.at)}
        </span>
      </div>

      <div class="stats" aria-label="Farm utilization">
        <div class="stat">
          <h2>CPU</h2>
          <Meter value={m.cpu_utilization} label="Farm CPU utilization" />
          <small class="muted">mean of connected clients</small>
        </div>
        <div class="stat">
          <h2>RAM</h2>
          <Meter value={m.ram_utilization} label="Farm RAM utilization" />
          <small class="muted">mean of connected clients</small>
        </div>
        <div class="stat">
          <h2>GPU</h2>
          <Meter value={gpuMean} label="Farm GPU utilization" />
          <small class="muted">
            {m.gpu_utilization.length} GPU{m.gpu_utilization.length === 1 ? '' : 's'}
          </small>
        </div>
        <div class="stat">
          <h2>Clients</h2>
          <p class="big" data-testid="connected-clients">
            {ov.clients.connected}
            <span class="muted small"> / {ov.clients.total} connected</span>
          </p>
          <small class="muted">{ov.clients.cordoned} cordoned</small>
        </div>
        <div class="stat">
          <h2>Active tasks</h2>
          <p class="big">{m.active_tasks}</p>
          <small class="muted">{ov.tasks.total} tasks in all</small>
        </div>
      </div>

      <Section title="Tasks by status">
        <ul class="status-counts">
          {TASK_STATUS_ORDER.map((s) => (
            <li key={s}>
              <Link href={`/tasks?status=${s}`} aria-label={`${ov.tasks.by_status[s] ?? 0} ${s} tasks`}>
                <StatusBadge status={s} />
                <span class="count" data-status={s}>
                  {ov.tasks.by_status[s] ?? 0}
                </span>
              </Link>
            </li>
          ))}
        </ul>
      </Section>

      <div class="grid-2">
        <Section title="Throughput">
          {chart.x.length < 2 ? (
            <p class="muted">Tasks finished per minute appear here after a few samples (one every 5 s).</p>
          ) : null}
          <LineChart
            title="Tasks finished per minute"
            x={chart.x}
            ys={chart.ys}
            time
            series={[
              { label: 'completed/min', color: '#2f9e62' },
              { label: 'failed/min', color: '#d64545' },
            ]}
          />
        </Section>

        <Section title="Running now" actions={<Link href="/tasks?status=running">All running</Link>}>
          {running.error ? <ErrorNote error={running.error} /> : null}
          {running.data && running.data.items.length === 0 ? <p class="muted">No task is running.</p> : null}
          <ul class="task-mini">
            {running.data?.items.map((t) => (
              <li key={t.id}>
                <Link href={`/tasks/${t.id}`}>
                  #{t.id} {t.name ?? t.type}
                </Link>
                <Progress value={t.progress} label={`Task ${t.id} progress`} status={t.status} />
                <span class="muted small">{t.client_id ?? ''}</span>
              </li>
            ))}
          </ul>
        </Section>
      </div>

      {m.gpu_utilization.length ? (
        <Section title="GPUs">
          <ul class="gpu-list">
            {m.gpu_utilization.map((g) => (
              <li key={g.id}>
                <span class="mono">{g.id}</span>
                <Meter value={g.utilization} label={`GPU ${g.id} utilization`} />
                <span class="muted small">
                  {g.memory_used === null ? '' : `${Math.round(g.memory_used)} MB used`}
                </span>
              </li>
            ))}
          </ul>
        </Section>
      ) : null}
    </div>
  );
}
