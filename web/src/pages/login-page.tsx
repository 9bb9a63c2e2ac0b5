import { useState } from 'preact/hooks';
import type { SessionView } from '../../../src/api/session.js';
import { api, ApiError, errorMessage } from '../api.js';
import { useTitle } from '../hooks.js';

export function LoginPage({ onLogin, ended }: { onLogin: (s: SessionView) => void; ended: boolean }) {
  useTitle('Log in');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onLogin(await api<SessionView>('POST', '/api/session', { username, password }));
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) {
        const minutes = Math.ceil((err.retryAfter ?? 60) / 60);
        setError(`Too many failed logins. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`);
      } else if (err instanceof ApiError && err.status === 401) {
        setError('Wrong username or password.');
      } else setError(errorMessage(err));
      setPassword('');
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login" id="main">
      <form class="login-card" onSubmit={submit} aria-labelledby="login-title">
        <div class="login-brand">
          <img src="/favicon.svg" alt="" width={40} height={40} />
          <h1 id="login-title">AI Farm</h1>
        </div>
        <p class="muted">Log in to the admin panel.</p>
        {ended ? (
          <p class="note note-info" role="status">
            Your session has ended. Log in again to continue.
          </p>
        ) : null}
        {error ? (
          <p class="note note-error" role="alert" id="login-error">
            {error}
          </p>
        ) : null}
        <div class="field">
          <label for="username">Username</label>
          <input
            id="username"
            name="username"
            autocomplete="username"
            autoFocus
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="password">Password</label>
          <input
            id="password"
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            aria-describedby={error ? 'login-error' : undefined}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </div>
        <button type="submit" class="primary wide" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <p class="hint">
          First start? The password of <code>admin</code> was printed by the server (or set with
          ADMIN_PASSWORD).
        </p>
      </form>
    </main>
  );
}
