import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import type { Client } from '../../../src/api/clients.js';
import type { Task } from '../../../src/api/tasks.js';
import { api } from '../api.js';
import { ErrorNote, Facts, Link, Loading, Meter, Pager, Section, StatusBadge } from '../components/ui.js';
import { ago, bytes, dateTime, json, num, obj } from '../format.js';
import { REFETCH_MS, useAsync, useThrottled, useTick, useTitle } from '../hooks.js';
import { useLive } from '../live.js';
import { TaskTable } from './tasks-page.js';
import { CordonButton } from './clients-page.js';
import { clientState, hardware, utilization } from './client-info.js';

type Page<T> = { items: T[]; total: number; limit: number; offset: number };
const PAGE_SIZE = 20;

/** One client: hardware, load, state, and the tasks it ran (its history). */
export function ClientPage({ id }: { id: string }) {
  useTitle(`Client ${id}`);
  useTick(10_000);
  const [offset, setOffset] = useState(0);
  const client = useAsync(() => api<Client>('GET', `/api/clients/${encodeURIComponent(id)}`), [id]);
  const tasks = useAsync(
    () =>
      api<Page<Task>>(
        'GET',
        `/api/tasks?client_id=${encodeURIComponent(id)}&limit=${PAGE_SIZE}&offset=${offset}`,
      ),
    [id, offset],
  );
  const refetchClient = useThrottled(() => void client.reload(), REFETCH_MS);
  const refetchTasks = useThrottled(() => void tasks.reload(), REFETCH_MS);
  useLive('client', (e) => e.client_id === id && refetchClient());
  useLive('task', (e) => {
    const known = tasks.data?.items.find((t) => t.id === e.task_id);
    if (known && e.progress !== undefined && e.status === known.status)
      tasks.setData(
        (p) =>
          p && {
            ...p,
            items: p.items.map((t) => (t.id === e.task_id ? { ...t, progress: e.progress as number } : t)),
          },
      );
    else refetchTasks();
  });

  if (client.error)
    return (
      <div class="page">
        <ErrorNote error={client.error} title={`Client ${id}`} />
      </div>
    );
  const c = client.data;
  if (!c)
    return (
      <div class="page">
        <Loading what={`client ${id}`} />
      </div>
    );
  const hw = hardware(c);
  const u = utilization(c);
  const cpu = obj(c.cpu_info);
  const ram = obj(c.ram_info);
  const session = obj(c.session_info);

  return (
    <div class="page">
      <p class="crumbs">
        <Link href="/clients">Clients</Link> / {c.id}
      </p>
      <div class="page-head">
        <div class="title-line">
          <h1>
            <span class="mono">{c.id}</span>
          </h1>
          <StatusBadge status={clientState(c)} />
        </div>
        <CordonButton client={c} onDone={(n) => client.setData(() => n)} />
      </div>
      {c.cordoned ? (
        <p class="note note-info" role="status">
          Cordoned: this client gets no new work; what it runs now goes on to the end.
        </p>
      ) : null}
      <div class="grid-2">
        <Section title="Hardware">
          <Facts
            items={[
              ['Host name', c.hostname ?? '—'],
              [
                'CPU',
                `${hw.cpu}${hw.cores ? ` · ${hw.cores} logical cores` : ''}${num(cpu.cores_physical) ? ` (${String(cpu.cores_physical)} physical)` : ''}`,
              ],
              [
                'RAM',
                `${bytes(hw.ramTotal)}${num(ram.available) !== null ? ` · ${bytes(ram.available)} available` : ''}`,
              ],
              [
                'GPUs',
                hw.gpus.length
                  ? hw.gpus
                      .map((g) => `${g.name}${g.memoryMb ? ` (${Math.round(g.memoryMb)} MB)` : ''}`)
                      .join(', ')
                  : 'none',
              ],
              ['Platform', hw.platform ?? '—'],
            ]}
          />
        </Section>
        <Section title="Utilization">
          <Facts
            items={[
              ['CPU', <Meter value={u.cpu} label="CPU utilization" />],
              ['RAM', <Meter value={u.ram} label="RAM utilization" />],
              ...u.gpus.map((g, i): [string, ComponentChildren] => [
                `GPU ${i}`,
                <Meter value={g} label={`GPU ${i} utilization`} />,
              ]),
            ]}
          />
          <Facts
            items={[
              ['Connected', c.connected ? 'yes' : 'no'],
              [
                'Last seen',
                <time dateTime={c.last_seen} title={dateTime(c.last_seen)}>
                  {c.connected ? 'now' : ago(c.last_seen)}
                </time>,
              ],
              ['Registered', dateTime(c.registered_at)],
              ['Tasks completed', num(session.total_tasks_completed) ?? '—'],
            ]}
          />
        </Section>
      </div>
      <Section title="Tasks on this client">
        <ErrorNote error={tasks.error} />
        {tasks.data && tasks.data.items.length === 0 ? (
          <p class="muted">This client has run no task yet.</p>
        ) : null}
        {tasks.data ? <TaskTable tasks={tasks.data.items} /> : null}
        {tasks.data ? (
          <Pager offset={offset} limit={PAGE_SIZE} total={tasks.data.total} onPage={setOffset} />
        ) : null}
      </Section>
      <Section title="Reported system info">
        <details>
          <summary>Raw data as the client sent it</summary>
          <pre class="code">
            {json({
              cpu_info: c.cpu_info,
              ram_info: c.ram_info,
              gpu_info: c.gpu_info,
              session_info: c.session_info,
              utilization: c.utilization,
            })}
          </pre>
        </details>
      </Section>
    </div>
  );
}
