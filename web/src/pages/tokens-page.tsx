import type { Static } from '@sinclair/typebox';
import { useState } from 'preact/hooks';
import type { CreatedToken, TokenView } from '../../../src/api/tokens.js';
import { api, ApiError, errorMessage } from '../api.js';
import { ConfirmButton, ErrorNote, Field, Loading, Section, StatusBadge } from '../components/ui.js';
import { ago, dateTime } from '../format.js';
import { useAsync, useTitle } from '../hooks.js';

type Token = Static<typeof TokenView>;
const ROLES = [
  ['worker', 'worker: a machine that runs tasks'],
  ['user', 'user: submits and follows its own tasks'],
  ['admin', 'admin: everything'],
] as const;

/** API tokens: create (the secret is shown once), list, revoke. */
export function TokensPage() {
  useTitle('Tokens');
  const [showRevoked, setShowRevoked] = useState(false);
  const list = useAsync(
    () => api<{ items: Token[] }>('GET', `/api/tokens?include_revoked=${showRevoked}`),
    [showRevoked],
  );
  const [created, setCreated] = useState<Static<typeof CreatedToken> | null>(null);
  const [name, setName] = useState('');
  const [role, setRole] = useState('worker');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const [copied, setCopied] = useState(false);

  const create = async (e: Event) => {
    e.preventDefault();
    setErrors({});
    setError(null);
    setCopied(false);
    try {
      const t = await api<Static<typeof CreatedToken>>('POST', '/api/tokens', { name: name.trim(), role });
      setCreated(t);
      setName('');
      void list.reload();
    } catch (err) {
      if (err instanceof ApiError && err.status === 400 && err.fields.length) setErrors(err.fieldMessages());
      else setError(err);
    }
  };

  return (
    <div class="page">
      <h1>Tokens</h1>
      <p class="muted">
        Workers, scripts and the CLI authenticate with a bearer token. A token's secret is shown once, when it
        is created; the server keeps only its hash.
      </p>
      <Section title="Create a token">
        <form class="form inline-form" onSubmit={create} noValidate>
          <Field
            id="token-name"
            label="Name"
            error={errors.name}
            hint="Letters, digits and _ . @ : - ; tokens with the same name share their tasks."
          >
            {(aria) => (
              <input
                {...aria}
                value={name}
                onInput={(e) => setName(e.currentTarget.value)}
                required
                autocomplete="off"
              />
            )}
          </Field>
          <Field id="token-role" label="Role" error={errors.role}>
            {(aria) => (
              <select {...aria} value={role} onChange={(e) => setRole(e.currentTarget.value)}>
                {ROLES.map(([r, label]) => (
                  <option key={r} value={r}>
                    {label}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <div class="actions">
            <button type="submit" class="primary">
              Create token
            </button>
          </div>
        </form>
        <ErrorNote error={error} />
        {created ? (
          <div class="secret" role="status" aria-live="polite">
            <p>
              <strong>
                Token for {created.name} ({created.role}).
              </strong>{' '}
              Copy it now: it will not be shown again.
            </p>
            <div class="secret-row">
              <input
                class="mono"
                readOnly
                value={created.token}
                aria-label="The new token"
                onFocus={(e) => e.currentTarget.select()}
                data-testid="new-token"
              />
              <button
                type="button"
                class="secondary"
                onClick={async () => {
                  try {
                    await navigator.clipboard.writeText(created.token);
                    setCopied(true);
                  } catch (err) {
                    setError(new Error(`Copy failed (${errorMessage(err)}); select the text and copy it.`));
                  }
                }}
              >
                {copied ? 'Copied' : 'Copy'}
              </button>
              <button type="button" class="link" onClick={() => setCreated(null)}>
                Done
              </button>
            </div>
            {created.role === 'worker' ? (
              <p class="small">
                Start a worker with:{' '}
                <code>
                  ai-farm worker --server {location.origin} --token {created.token}
                </code>
              </p>
            ) : null}
          </div>
        ) : null}
      </Section>

      <Section
        title="Tokens"
        actions={
          <label class="check">
            <input
              type="checkbox"
              checked={showRevoked}
              onChange={(e) => setShowRevoked(e.currentTarget.checked)}
            />
            Show revoked
          </label>
        }
      >
        <ErrorNote error={list.error} />
        {!list.data && !list.error ? <Loading what="tokens" /> : null}
        {list.data ? (
          <div class="table-wrap">
            <table class="table responsive">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Role</th>
                  <th scope="col">Id</th>
                  <th scope="col">Created</th>
                  <th scope="col">Last used</th>
                  <th scope="col">
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.data.items.map((t) => (
                  <tr key={t.id} data-token-id={t.id} class={t.revoked_at ? 'revoked' : ''}>
                    <td data-label="Name">{t.name}</td>
                    <td data-label="Role">
                      <StatusBadge status={t.role} />
                    </td>
                    <td data-label="Id" class="mono small">
                      {t.id}
                    </td>
                    <td data-label="Created" title={dateTime(t.created_at)}>
                      <span>
                        {ago(t.created_at)}
                        {t.created_by ? <span class="muted small"> by {t.created_by}</span> : null}
                      </span>
                    </td>
                    <td data-label="Last used">
                      {t.last_used_at ? ago(t.last_used_at) : <span class="muted">never</span>}
                    </td>
                    <td data-label="Actions">
                      {t.revoked_at ? (
                        <span class="muted">revoked {ago(t.revoked_at)}</span>
                      ) : (
                        <ConfirmButton
                          label="Revoke"
                          onConfirm={async () => {
                            try {
                              await api('DELETE', `/api/tokens/${encodeURIComponent(t.id)}`);
                            } catch (err) {
                              setError(err);
                            }
                            await list.reload();
                          }}
                        />
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </Section>
    </div>
  );
}
