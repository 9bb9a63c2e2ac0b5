/**
 * The security suite's route matrix: who calls, and what each route must answer them, as
 * docs/api.md, docs/training.md and docs/admin-panel.md promise.
 */

export type Who =
  'no token' | 'wrong token' | 'revoked token' | 'ended session' | 'worker token' | "another user's token";
export const PRINCIPALS: readonly Who[] = [
  'no token',
  'wrong token',
  'revoked token',
  'ended session',
  'worker token',
  "another user's token",
];
/** What a worker or a user (not the owner) must get; anonymous kinds always get 401. */
export interface Want {
  status: number | number[];
  code?: string;
}
export interface Rule {
  /** Needs no credentials (health, docs, login, the panel's static shell). */
  public?: true;
  worker?: Want;
  user?: Want;
  /** Concrete requests for this route (default: the pattern with ids filled in). */
  probes?: { path: string; want?: Partial<Record<'anon' | 'worker' | 'user', Want>> }[];
}

export const forbidden: Want = { status: 403, code: 'forbidden' };
export const taskHidden: Want = { status: 404, code: 'task_not_found' };
/** Admins only: workers and users refused. */
const ADMIN_ONLY: Rule = { worker: forbidden, user: forbidden };
/** Users and admins, on the tasks they may see; workers refused. */
const OWN_TASK: Rule = { worker: forbidden, user: taskHidden };
/** Users read it; workers refused. */
const USERS_READ: Rule = { worker: forbidden, user: { status: 200 } };
/** tus probes without a Tus-Resumable header: a worker is told it must send one (412). */
const TUS_WORKER: Rule = { worker: { status: 412 }, user: forbidden };

/**
 * What docs/api.md, docs/training.md and docs/admin-panel.md promise for each route. A route
 * the app has and this table lacks fails the suite: new routes must be placed here.
 */
export const RULES: Record<string, Rule> = {
  'GET /health': { public: true },
  'GET /ready': { public: true },
  'GET /openapi.json': { public: true },
  'GET /docs': { public: true },
  'GET /docs/': { public: true },
  'GET /docs/static/index.html': { public: true },
  'GET /docs/static/swagger-initializer.js': { public: true },
  'GET /docs/*': { public: true, probes: [{ path: '/docs/static/swagger-ui.css' }] },
  'GET /docs/json': { public: true },
  'GET /docs/yaml': { public: true },
  // Login: public by nature; an empty body is refused by validation, before the throttle counts it.
  'POST /api/session': { public: true },
  'GET /api/session': { worker: { status: 200 }, user: { status: 200 } },
  'DELETE /api/session': {
    worker: { status: 400, code: 'no_session' },
    user: { status: 400, code: 'no_session' },
  },
  // The panel's catch-all: its pages are public, unknown API paths are 401 to strangers.
  'GET *': {
    public: true,
    probes: [
      { path: '/tasks/1' },
      {
        path: '/api/no-such-route',
        want: {
          anon: { status: 401, code: 'unauthorized' },
          worker: { status: 404, code: 'route_not_found' },
          user: { status: 404, code: 'route_not_found' },
        },
      },
    ],
  },
  'GET /api/tasks': USERS_READ,
  'POST /api/tasks': { worker: forbidden, user: { status: 201 } },
  'POST /api/tasks/batch': { worker: forbidden, user: { status: 201 } },
  'GET /api/tasks/:id': OWN_TASK,
  'DELETE /api/tasks/:id': OWN_TASK,
  'PUT /api/tasks/:id/status': OWN_TASK,
  'GET /api/tasks/:id/events': OWN_TASK,
  'GET /api/tasks/:id/metrics': OWN_TASK,
  'GET /api/tasks/:id/assignments': OWN_TASK,
  'GET /api/tasks/:id/logs': OWN_TASK,
  // Workers read rounds and models of tasks their clients hold: 404 for any other.
  'GET /api/tasks/:id/rounds': { worker: taskHidden, user: taskHidden },
  'GET /api/tasks/:id/rounds/current': { worker: taskHidden, user: taskHidden },
  'GET /api/tasks/:id/rounds/:round/model': { worker: taskHidden, user: taskHidden },
  'GET /api/tasks/:id/model': { worker: taskHidden, user: taskHidden },
  // A worker whose client holds no lease on it: 409 stale_attempt (docs/training.md), same as
  // for a task that does not exist, so it learns nothing.
  'PUT /api/tasks/:id/rounds/:round/updates/:rank': {
    worker: { status: 409, code: 'stale_attempt' },
    user: forbidden,
  },
  // tus on the update URL (docs/training.md "Resumable uploads"): the probes send no
  // Tus-Resumable header, which a worker is told it must (412) once its token passed.
  'OPTIONS /api/tasks/:id/rounds/:round/updates/:rank': { public: true },
  'POST /api/tasks/:id/rounds/:round/updates/:rank': TUS_WORKER,
  'GET /api/tasks/:id/rounds/:round/updates/:rank/uploads/:upload': TUS_WORKER,
  'PATCH /api/tasks/:id/rounds/:round/updates/:rank/uploads/:upload': TUS_WORKER,
  'DELETE /api/tasks/:id/rounds/:round/updates/:rank/uploads/:upload': TUS_WORKER,
  'GET /api/clients': USERS_READ,
  'GET /api/clients/:id': USERS_READ,
  'PUT /api/clients/:id/status': ADMIN_ONLY,
  'GET /api/tokens': ADMIN_ONLY,
  'POST /api/tokens': ADMIN_ONLY,
  'DELETE /api/tokens/:id': ADMIN_ONLY,
  'GET /api/users': ADMIN_ONLY,
  'POST /api/users': ADMIN_ONLY,
  'PUT /api/users/:id/password': ADMIN_ONLY,
  'DELETE /api/users/:id': ADMIN_ONLY,
  'GET /api/overview': ADMIN_ONLY,
  'GET /api/events': ADMIN_ONLY,
  'GET /api/metrics': USERS_READ,
  // The model registry (docs/api.md): people push, workers read; deleting is the pusher's or an admin's.
  'PUT /api/models/:name/:version': {
    worker: forbidden,
    user: { status: [200, 201] },
    probes: [{ path: '/api/models/sec-model/1' }],
  },
  'GET /api/models': { worker: { status: 200 }, user: { status: 200 } },
  'GET /api/models/:name/:version': {
    worker: { status: 404, code: 'model_not_found' },
    user: { status: 404, code: 'model_not_found' },
    probes: [{ path: '/api/models/sec-none/1' }],
  },
  'DELETE /api/models/:name/:version': {
    worker: forbidden,
    user: { status: 404, code: 'model_not_found' },
    probes: [{ path: '/api/models/sec-none/1' }],
  },
  // A JSON body is not a tar.gz: refused by the archive check, after the auth let it through.
  'POST /api/bundles': { worker: forbidden, user: { status: 400, code: 'invalid_archive' } },
  'GET /api/bundles/:digest': {
    worker: { status: 404, code: 'code_not_found' },
    user: { status: 404, code: 'code_not_found' },
    probes: [{ path: `/api/bundles/sha256:${'0'.repeat(64)}` }],
  },
  'GET /metrics': USERS_READ,
};

/** Bodies that pass validation, so a refusal is the auth's doing and an allowed call does real work. */
export function bodyFor(method: string, url: string): unknown {
  if (method === 'POST' && url === '/api/tasks') return { type: 'sec', requirements: { min_ram_gb: 1e6 } };
  if (url === '/api/tasks/batch') return { tasks: [{ type: 'sec', requirements: { min_ram_gb: 1e6 } }] };
  if (method === 'POST' && url === '/api/session') return {};
  if (url === '/api/tasks/:id/status') return { status: 'paused' };
  if (url === '/api/clients/:id/status') return { status: 'inactive' };
  if (method === 'POST' && url === '/api/tokens') return { name: 'sec-minted', role: 'admin' };
  if (method === 'POST' && url === '/api/users') return { username: 'sec-minted', password: 'x'.repeat(16) };
  if (url === '/api/users/:id/password') return { password: 'y'.repeat(16) };
  // Code is raw bytes; these JSON texts are pushed as they are (a file, and a non-archive).
  if (method === 'PUT' && url === '/api/models/:name/:version') return { code: 'print(1)' };
  if (method === 'POST' && url === '/api/bundles') return { not: 'an archive' };
  return undefined;
}
