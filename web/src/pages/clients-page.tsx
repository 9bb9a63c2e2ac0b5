import { useMemo, useState } from 'preact/hooks';
import type { Client } from '../../../src/api/clients.js';
import type { Task } from '../../../src/api/tasks.js';
import { api } from '../api.js';
import { ErrorNote, Link, Loading, Meter, Pager, StatusBadge } from '../components/ui.js';
import { ago } from '../format.js';
import { REFETCH_MS, useAsync, useThrottled, useTick, useTitle } from '../hooks.js';
import { useLive } from '../live.js';
import { clientState, hardware, hardwareSummary, utilization } from './client-info.js';

type Page<T> = { items: T[]; total: number; limit: number; offset: number };
const PAGE_SIZE = 50;

/** Cordons ("inactive": no new work) or uncordons a client. */
export async function setCordon(id: string, cordon: boolean): Promise<Client> {
  return api<Client>('PUT', `/api/clients/${encodeURIComponent(id)}/status`, {
    status: cordon ? 'inactive' : 'active',
  });
}

export function CordonButton({ client, onDone }: { client: Client; onDone: (c: Client) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return (
    <>
      <button
        type="button"
        class="secondary small"
        disabled={busy}
        aria-label={`${client.cordoned ? 'Uncordon' : 'Cordon'} ${client.id}`}
        onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            onDone(await setCordon(client.id, !client.cordoned));
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        {client.cordoned ? 'Uncordon' : 'Cordon'}
      </button>
      <ErrorNote error={error} />
    </>
  );
}

export function ClientsPage() {
  useTitle('Clients');
  useTick(10_000);
  const [offset, setOffset] = useState(0);
  const [connectedOnly, setConnectedOnly] = useState(false);
  const url = `/api/clients?limit=${PAGE_SIZE}&offset=${offset}${connectedOnly ? '&connected=true' : ''}`;
  const clients = useAsync(() => api<Page<Client>>('GET', url), [url]);
  // Current tasks: one request for every running task, grouped by client.
  const running = useAsync(() => api<Page<Task>>('GET', '/api/tasks?status=running&limit=500'), []);
  const refetchClients = useThrottled(() => void clients.reload(), REFETCH_MS);
  const refetchRunning = useThrottled(() => void running.reload(), REFETCH_MS);
  useLive('client', refetchClients);
  useLive('task', (e) => {
    if (e.progress === undefined || e.status !== 'running') refetchRunning();
  });

  const byClient = useMemo(() => {
    const m = new Map<string, Task[]>();
    for (const t of running.data?.items ?? [])
      if (t.client_id) m.set(t.client_id, [...(m.get(t.client_id) ?? []), t]);
    return m;
  }, [running.data]);

  return (
    <div class="page">
      <div class="page-head">
        <h1>Clients</h1>
        <label class="check">
          <input
            type="checkbox"
            checked={connectedOnly}
            onChange={(e) => (setConnectedOnly(e.currentTarget.checked), setOffset(0))}
          />
          Connected only
        </label>
      </div>
      <ErrorNote error={clients.error} title="Clients could not be loaded" />
      {!clients.data && !clients.error ? <Loading what="clients" /> : null}
      {clients.data && clients.data.items.length === 0 ? (
        <div class="empty">
          <p>No client has connected yet.</p>
          <p class="muted">
            Start a worker with{' '}
            <code>ai-farm worker --server {location.origin} --token &lt;worker token&gt;</code>; create the
            token on the <Link href="/tokens">Tokens</Link> page (role worker).
          </p>
        </div>
      ) : null}
      {clients.data && clients.data.items.length ? (
        <div class="table-wrap">
          <table class="table responsive">
            <thead>
              <tr>
                <th scope="col">Client</th>
                <th scope="col">Status</th>
                <th scope="col">Hardware</th>
                <th scope="col">CPU</th>
                <th scope="col">RAM</th>
                <th scope="col">Tasks now</th>
                <th scope="col">Last seen</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {clients.data.items.map((c) => {
                const u = utilization(c);
                const tasks = byClient.get(c.id) ?? [];
                return (
                  <tr key={c.id} data-client-id={c.id}>
                    <td data-label="Client">
                      <Link href={`/clients/${encodeURIComponent(c.id)}`} class="mono">
                        {c.id}
                      </Link>
                      {c.hostname && c.hostname !== c.id ? <div class="muted small">{c.hostname}</div> : null}
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={clientState(c)} />
                    </td>
                    <td data-label="Hardware" class="small">
                      {hardwareSummary(hardware(c))}
                    </td>
                    <td data-label="CPU">
                      <Meter value={u.cpu} label={`${c.id} CPU`} />
                    </td>
                    <td data-label="RAM">
                      <Meter value={u.ram} label={`${c.id} RAM`} />
                    </td>
                    <td data-label="Tasks now">
                      {tasks.length ? (
                        tasks.map((t) => (
                          <Link key={t.id} href={`/tasks/${t.id}`} class="chip">
                            #{t.id} {Math.round(t.progress)}%
                          </Link>
                        ))
                      ) : (
                        <span class="muted">—</span>
                      )}
                    </td>
                    <td data-label="Last seen">
                      <time dateTime={c.last_seen} title={c.last_seen}>
                        {c.connected ? 'now' : ago(c.last_seen)}
                      </time>
                    </td>
                    <td data-label="Actions">
                      <CordonButton
                        client={c}
                        onDone={(n) =>
                          clients.setData(
                            (p) => p && { ...p, items: p.items.map((x) => (x.id === n.id ? n : x)) },
                          )
                        }
                      />
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      {clients.data ? (
        <Pager offset={offset} limit={PAGE_SIZE} total={clients.data.total} onPage={setOffset} />
      ) : null}
    </div>
  );
}
