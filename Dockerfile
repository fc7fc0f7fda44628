# The queue node, compiled. Cassandra and NATS come from outside (see docker-compose.yml).
#   docker build -t moleculer-cassandra-queue .
#   docker run --env-file queue.env -p 3000:3000 moleculer-cassandra-queue

# 1. Build: the TypeScript into dist/ and the operator console into dist-console/ (dev dependencies).
FROM node:24-bookworm-slim AS build
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json index.ts ./
COPY lib lib
COPY services services
COPY middleware middleware
COPY console console
RUN npm run build && npm run build:console

# 2. Run: compiled JavaScript and the production dependencies only, as the unprivileged `node` user.
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    CASSANDRA_CONTACT_POINTS=cassandra:9042 \
    CASSANDRA_LOCAL_DC=datacenter1 \
    TRANSPORTER=nats://nats:4222 \
    PORT=3000
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /build/dist dist
COPY --from=build /build/dist-console dist-console
USER node
EXPOSE 3000
# The gateway's /health answers 200 while Cassandra answers (it runs when an API secret is set).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node directly (no npm, no shell), so that SIGTERM from `docker stop` reaches the broker, which
# hands its queues over before it exits.
CMD ["node", "dist/lib/server-main.js"]
