import type { Static } from '@sinclair/typebox';
import { useState } from 'preact/hooks';
import type { ModelVersionDetail } from '../../../src/api/code.js';
import { api } from '../api.js';
import { ConfirmButton, ErrorNote, Link, Loading, Pager, Section, StatusBadge } from '../components/ui.js';
import { ago, bytes, dateTime } from '../format.js';
import { useAsync, useTitle } from '../hooks.js';

type Version = Static<typeof ModelVersionDetail>;
type Page<T> = { items: T[]; total: number; limit: number; offset: number };
const PAGE_SIZE = 50;

/** The model registry: every version with its size, digest and the tasks using it. */
export function ModelsPage() {
  useTitle('Models');
  const [offset, setOffset] = useState(0);
  const list = useAsync(
    () => api<Page<Version>>('GET', `/api/models?limit=${PAGE_SIZE}&offset=${offset}`),
    [offset],
  );
  const [error, setError] = useState<unknown>(null);

  return (
    <div class="page">
      <h1>Models</h1>
      <p class="muted">
        Immutable versions of model code, pushed with <code>ai-farm models push NAME VERSION PATH</code> and
        run by tasks with <code>--model NAME@VERSION</code>. Workers and the original AI Farm client fetch
        them from the model server (<code>GET /models/NAME/VERSION</code>).
      </p>
      <Section title="Versions">
        <ErrorNote error={error} />
        <ErrorNote error={list.error} />
        {!list.data && !list.error ? <Loading what="models" /> : null}
        {list.data && list.data.items.length === 0 ? <p class="muted">No model versions yet.</p> : null}
        {list.data && list.data.items.length > 0 ? (
          <div class="table-wrap">
            <table class="table responsive">
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Size</th>
                  <th scope="col">Digest</th>
                  <th scope="col">Pushed</th>
                  <th scope="col">Tasks</th>
                  <th scope="col">
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.data.items.map((m) => (
                  <tr key={`${m.name}@${m.version}`} data-model={`${m.name}@${m.version}`}>
                    <td data-label="Model" class="mono">
                      {m.name}@{m.version}
                    </td>
                    <td data-label="Kind">
                      {m.kind}
                      {m.file_name ? <span class="muted small"> {m.file_name}</span> : null}
                    </td>
                    <td data-label="Size">{bytes(m.size)}</td>
                    <td data-label="Digest" class="mono small" title={m.digest}>
                      {m.digest.slice(0, 19)}…
                    </td>
                    <td data-label="Pushed" title={dateTime(m.created_at)}>
                      {ago(m.created_at)}
                      {m.created_by ? <span class="muted small"> by {m.created_by}</span> : null}
                    </td>
                    <td data-label="Tasks">
                      {m.tasks.length === 0 ? <span class="muted">none</span> : null}
                      {m.tasks.map((t) => (
                        <span key={t.id} class="task-use">
                          <Link href={`/tasks/${t.id}`}>#{t.id}</Link> <StatusBadge status={t.status} />{' '}
                        </span>
                      ))}
                    </td>
                    <td data-label="Actions">
                      <ConfirmButton
                        label="Delete"
                        class="danger small"
                        onConfirm={async () => {
                          setError(null);
                          try {
                            const path = `${encodeURIComponent(m.name)}/${encodeURIComponent(m.version)}`;
                            await api('DELETE', `/api/models/${path}`);
                          } catch (err) {
                            setError(err);
                          }
                          await list.reload();
                        }}
                      />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
        {list.data ? (
          <Pager offset={offset} limit={PAGE_SIZE} total={list.data.total} onPage={setOffset} />
        ) : null}
      </Section>
    </div>
  );
}
