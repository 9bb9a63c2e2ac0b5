# AI Farm server image. Build: docker build -t ai-farm-server .
# Run:   docker run -p 8000:8000 -p 8765:8765 -p 5000:5000 -v aifarm:/data ai-farm-server
# (Written to the Docker documentation; this repository's CI has no Docker engine to build it.)

# ---- build: compile TypeScript and the admin panel, native modules included ----
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY bin ./bin
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY web ./web
# `npm ci` runs `prepare`, which builds dist/ and web/dist/.
RUN npm ci && npm prune --omit=dev

# ---- run: only what the server needs, as an unprivileged user ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    DATA_DIR=/data/db \
    LOG_DIR=/data/logs \
    CHECKPOINT_DIR=/data/checkpoints \
    MODEL_CACHE_DIR=/data/model_cache
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist ./dist
COPY --from=build /app/web/dist ./web/dist
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# HTTP API and admin panel, worker WebSocket, model downloads.
EXPOSE 8000 8765 5000
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:8000/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "bin/ai-farm.js", "server"]
