import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorBody } from '../../api/common.js';
import { Overview } from '../../api/overview.js';
import type { TokenService } from '../../auth/token-service.js';
import type { EventHub, EventSink } from '../../panel/event-hub.js';
import type { OverviewService } from '../../panel/overview-service.js';
import { bearerToken } from '../auth.js';
import type { SessionAuth } from '../session-auth.js';

const errors = { 401: ErrorBody, 403: ErrorBody };
/** A browser that stops reading is dropped rather than buffered without bound. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * GET /api/overview (the farm at a glance) and GET /api/events, the admin panel's live
 * stream: Server-Sent Events named `overview`, `task` and `client` (see api/overview.ts).
 * Both are admin-only and authenticated like every other route (cookie or bearer token).
 */
export const eventsRoutes =
  (deps: {
    hub: EventHub;
    overview: OverviewService;
    auth: SessionAuth;
    tokens: TokenService;
  }): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/api/overview',
      {
        schema: {
          tags: ['panel'],
          summary: 'The farm at a glance: tasks by status, clients, utilization, throughput',
          response: { 200: Overview, ...errors },
        },
      },
      async () => deps.overview.current(),
    );

    app.get(
      '/api/events',
      {
        // One long request; it must not use up the caller's request budget.
        config: { rateLimit: false },
        schema: {
          tags: ['panel'],
          summary: 'Live stream (text/event-stream): overview, task and client events',
          response: errors,
        },
      },
      async (req, reply) => {
        const s = deps.auth.of(req);
        const token = bearerToken(req.headers.authorization);
        // Re-checked on every tick: logging out or revoking the token ends the stream.
        const stillValid = async () =>
          s
            ? (await deps.auth.sessions.authenticate(s.secret)) !== null
            : token
              ? (await deps.tokens.authenticate(token)) !== null
              : false;

        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache, no-transform',
          'x-accel-buffering': 'no',
          connection: 'keep-alive',
        });
        res.write('retry: 3000\n\n');
        let closed = false;
        const sink: EventSink = {
          send(event, data) {
            if (closed) return;
            if (res.writableLength > MAX_BUFFERED_BYTES) return sink.close();
            res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
          },
          close() {
            if (closed) return;
            closed = true;
            remove();
            res.end();
          },
          stillValid,
        };
        let remove = () => {};
        req.raw.on('close', () => sink.close());
        remove = await deps.hub.add(sink);
        if (closed) remove();
      },
    );
  };
