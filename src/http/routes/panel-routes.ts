import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../errors.js';

/** web/dist, from src/http/routes (tsx) and dist/http/routes (compiled) alike. */
export const DEFAULT_PANEL_ROOT = fileURLToPath(new URL('../../../web/dist/', import.meta.url));

/**
 * The panel's page never needs anything from another origin: scripts, styles and data all
 * come from this server, so a strict policy costs nothing and blunts injected markup.
 */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

/**
 * Serves the admin panel (web/dist) at / on SERVER_PORT. The static shell is public; every
 * piece of data comes from the authenticated API. Paths without a file extension are the
 * panel's own pages (/tasks/12) and get index.html; the API's unknown paths stay JSON 404s.
 */
export const panelRoutes =
  (opts: {
    root?: string;
    /**
     * Throws 401 unless the request is authenticated: an unknown API path answers 401 to
     * strangers (as every API path does), 404 only to callers who may know.
     */
    requireAuth: (req: FastifyRequest) => Promise<void>;
  }): FastifyPluginAsync =>
  async (app) => {
    const root = opts.root ?? DEFAULT_PANEL_ROOT;
    const built = existsSync(join(root, 'index.html'));
    if (built) await app.register(fastifyStatic, { root, serve: false });

    const page = (reply: FastifyReply) => {
      void reply.headers(SECURITY_HEADERS);
      if (!built) {
        return reply
          .status(503)
          .type('text/plain; charset=utf-8')
          .send(
            'The admin panel is not built. Run `npm run build:web` (npm install does it), then reload.\n',
          );
      }
      return reply.header('cache-control', 'no-cache').sendFile('index.html', { cacheControl: false });
    };

    app.get<{ Params: { '*': string } }>(
      '/*',
      { config: { public: true, rateLimit: false }, schema: { hide: true } },
      async (req, reply) => {
        const path = req.params['*'] ?? '';
        if (path === 'api' || path.startsWith('api/')) {
          await opts.requireAuth(req);
          throw new AppError('route_not_found', `no route ${req.method} /${path}`, 404);
        }
        const last = path.split('/').pop() ?? '';
        if (!last.includes('.')) return page(reply);
        if (!built) throw new AppError('not_found', `/${path} does not exist`, 404);
        void reply.headers(SECURITY_HEADERS);
        // Vite names assets by content hash: they never change under the same name.
        const hashed = path.startsWith('assets/');
        return reply.sendFile(path, {
          maxAge: hashed ? 365 * 86_400_000 : 0,
          immutable: hashed,
          cacheControl: hashed,
          dotfiles: 'deny',
        });
      },
    );
  };
