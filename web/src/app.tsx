import { useCallback, useEffect, useState } from 'preact/hooks';
import type { SessionView } from '../../src/api/session.js';
import { api, ApiError, setCsrfToken, setUnauthorizedHandler } from './api.js';
import { Link } from './components/ui.js';
import { connectLive, disconnectLive, useLiveState } from './live.js';
import { ClientPage } from './pages/client-page.js';
import { ClientsPage } from './pages/clients-page.js';
import { LoginPage } from './pages/login-page.js';
import { ModelsPage } from './pages/models-page.js';
import { OverviewPage } from './pages/overview-page.js';
import { TaskCreatePage } from './pages/task-create-page.js';
import { TaskPage } from './pages/task-page.js';
import { TasksPage } from './pages/tasks-page.js';
import { TokensPage } from './pages/tokens-page.js';
import { UsersPage } from './pages/users-page.js';
import { match, navigate, useLocation } from './router.js';
import { SessionContext } from './session.js';

const NAV = [
  ['/', 'Overview'],
  ['/tasks', 'Tasks'],
  ['/clients', 'Clients'],
  ['/models', 'Models'],
  ['/tokens', 'Tokens'],
  ['/users', 'Users'],
] as const;

/** The panel: checks the session, then shows the page the address names. */
export function App() {
  const [session, setSession] = useState<SessionView | null | undefined>(undefined);
  const [ended, setEnded] = useState(false);

  const check = useCallback(async () => {
    try {
      const s = await api<SessionView>('GET', '/api/session');
      setCsrfToken(s.csrf_token);
      setSession(s);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        setSession((prev) => {
          if (prev) setEnded(true);
          return null;
        });
        setCsrfToken(null);
      } else setTimeout(() => void check(), 5000);
    }
  }, []);

  useEffect(() => {
    setUnauthorizedHandler(() => {
      setEnded(true);
      setSession(null);
      setCsrfToken(null);
    });
    void check();
  }, [check]);

  useEffect(() => {
    if (!session) return;
    connectLive(() => void check());
    return () => disconnectLive();
  }, [session, check]);

  if (session === undefined) return <p class="boot muted">Loading AI Farm…</p>;
  if (!session)
    return (
      <LoginPage
        ended={ended}
        onLogin={(s) => {
          setCsrfToken(s.csrf_token);
          setEnded(false);
          setSession(s);
          if (location.pathname === '/login') navigate('/', { replace: true });
        }}
      />
    );

  return (
    <SessionContext.Provider value={session}>
      <Shell
        session={session}
        onLogout={async () => {
          try {
            await api('DELETE', '/api/session');
          } finally {
            disconnectLive();
            setCsrfToken(null);
            setEnded(false);
            setSession(null);
          }
        }}
      />
    </SessionContext.Provider>
  );
}

function Shell({ session, onLogout }: { session: SessionView; onLogout: () => Promise<void> }) {
  const { path } = useLocation();
  const live = useLiveState();
  const section = '/' + (path.split('/')[1] ?? '');
  return (
    <div class="layout">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/" class="brand" aria-label="AI Farm overview">
          <img src="/favicon.svg" alt="" width={24} height={24} />
          <span>AI Farm</span>
        </Link>
        <nav class="nav" aria-label="Main">
          {NAV.map(([href, label]) => (
            <Link key={href} href={href} aria-current={section === href ? 'page' : undefined}>
              {label}
            </Link>
          ))}
        </nav>
        <div class="who">
          <span class={`live live-${live}`} role="status" title="Live updates">
            <span class="dot" aria-hidden="true" />
            {live === 'live' ? 'Live' : live === 'connecting' ? 'Connecting…' : 'Offline'}
          </span>
          <span class="user" title={`Logged in as ${session.username}`}>
            {session.username}
          </span>
          <button type="button" class="secondary small" onClick={() => void onLogout()}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Route path={path} />
      </main>
    </div>
  );
}

function Route({ path }: { path: string }) {
  let m: Record<string, string> | null;
  if (path === '/' || path === '/login') return <OverviewPage />;
  if (match('/tasks', path)) return <TasksPage />;
  if (match('/tasks/new', path)) return <TaskCreatePage />;
  if ((m = match('/tasks/:id', path))) return <TaskPage id={Number(m.id)} />;
  if (match('/clients', path)) return <ClientsPage />;
  if ((m = match('/clients/:id', path))) return <ClientPage id={m.id as string} />;
  if (match('/models', path)) return <ModelsPage />;
  if (match('/tokens', path)) return <TokensPage />;
  if (match('/users', path)) return <UsersPage />;
  return (
    <div class="page">
      <h1>Not found</h1>
      <p>
        There is no page at {path}. <Link href="/">Go to the overview</Link>.
      </p>
    </div>
  );
}
