import { useState } from 'preact/hooks';
import type { UserView } from '../../../src/api/session.js';
import { api, ApiError } from '../api.js';
import { ConfirmButton, ErrorNote, Field, Loading, Section } from '../components/ui.js';
import { ago, dateTime } from '../format.js';
import { useAsync, useTitle } from '../hooks.js';
import { useSession } from '../session.js';

/** Errors by field, or the whole error for the form. */
function split(err: unknown): { fields: Record<string, string>; other: unknown } {
  if (err instanceof ApiError && err.status === 400 && err.fields.length)
    return { fields: err.fieldMessages(), other: null };
  return { fields: {}, other: err };
}

/** Admin-panel users: add, change passwords, remove. */
export function UsersPage() {
  useTitle('Users');
  const me = useSession();
  const list = useAsync(() => api<{ items: UserView[] }>('GET', '/api/users'), []);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [editing, setEditing] = useState<number | null>(null);

  const add = async (e: Event) => {
    e.preventDefault();
    setErrors({});
    setError(null);
    try {
      const u = await api<UserView>('POST', '/api/users', { username: username.trim(), password });
      setNotice(`Added ${u.username}.`);
      setUsername('');
      setPassword('');
      void list.reload();
    } catch (err) {
      const s = split(err);
      setErrors(s.fields);
      setError(s.other);
    }
  };

  return (
    <div class="page">
      <h1>Users</h1>
      <p class="muted">
        Everyone here is an administrator of this farm. The CLI does the same:{' '}
        <code>ai-farm users add|passwd</code>.
      </p>
      {notice ? (
        <p class="note note-info" role="status">
          {notice}
        </p>
      ) : null}
      <Section title="Users">
        <ErrorNote error={list.error} />
        {!list.data && !list.error ? <Loading what="users" /> : null}
        <ul class="user-list">
          {list.data?.items.map((u) => (
            <li key={u.id} data-user={u.username}>
              <div class="user-row">
                <div>
                  <strong>{u.username}</strong>
                  {me?.user_id === u.id ? <span class="badge badge-you">you</span> : null}
                  <div class="muted small" title={dateTime(u.updated_at)}>
                    added {ago(u.created_at)} · password changed {ago(u.updated_at)}
                  </div>
                </div>
                <div class="toolbar">
                  <button
                    type="button"
                    class="secondary small"
                    aria-expanded={editing === u.id}
                    onClick={() => setEditing(editing === u.id ? null : u.id)}
                  >
                    Change password
                  </button>
                  {me?.user_id !== u.id ? (
                    <ConfirmButton
                      class="danger small"
                      label="Remove"
                      onConfirm={async () => {
                        try {
                          await api('DELETE', `/api/users/${u.id}`);
                          setNotice(`Removed ${u.username}.`);
                        } catch (err) {
                          setError(err);
                        }
                        await list.reload();
                      }}
                    />
                  ) : null}
                </div>
              </div>
              {editing === u.id ? (
                <PasswordForm
                  user={u}
                  self={me?.user_id === u.id}
                  onDone={() => {
                    setEditing(null);
                    setNotice(
                      `Password of ${u.username} changed${me?.user_id === u.id ? '' : '; their sessions were ended'}.`,
                    );
                    void list.reload();
                  }}
                />
              ) : null}
            </li>
          ))}
        </ul>
        <ErrorNote error={error} />
      </Section>
      <Section title="Add a user">
        <form class="form inline-form" onSubmit={add} noValidate>
          <Field id="user-name" label="Username" error={errors.username}>
            {(aria) => (
              <input
                {...aria}
                value={username}
                autocomplete="off"
                onInput={(e) => setUsername(e.currentTarget.value)}
              />
            )}
          </Field>
          <Field id="user-password" label="Password" error={errors.password} hint="At least 8 characters.">
            {(aria) => (
              <input
                {...aria}
                type="password"
                autocomplete="new-password"
                value={password}
                onInput={(e) => setPassword(e.currentTarget.value)}
              />
            )}
          </Field>
          <div class="actions">
            <button type="submit" class="primary">
              Add user
            </button>
          </div>
        </form>
      </Section>
    </div>
  );
}

function PasswordForm({ user, self, onDone }: { user: UserView; self: boolean; onDone: () => void }) {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  return (
    <form
      class="form inline-form sub-form"
      noValidate
      aria-label={`New password for ${user.username}`}
      onSubmit={async (e) => {
        e.preventDefault();
        setErrors({});
        setError(null);
        try {
          await api('PUT', `/api/users/${user.id}/password`, {
            password: next,
            ...(self ? { current_password: current } : {}),
          });
          onDone();
        } catch (err) {
          const s = split(err);
          setErrors(s.fields);
          setError(s.other);
        }
      }}
    >
      {self ? (
        <Field id={`cur-${user.id}`} label="Current password" error={errors.current_password}>
          {(aria) => (
            <input
              {...aria}
              type="password"
              autocomplete="current-password"
              value={current}
              onInput={(e) => setCurrent(e.currentTarget.value)}
            />
          )}
        </Field>
      ) : null}
      <Field id={`new-${user.id}`} label="New password" error={errors.password} hint="At least 8 characters.">
        {(aria) => (
          <input
            {...aria}
            type="password"
            autocomplete="new-password"
            value={next}
            onInput={(e) => setNext(e.currentTarget.value)}
          />
        )}
      </Field>
      <div class="actions">
        <button type="submit" class="primary">
          Save password
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
