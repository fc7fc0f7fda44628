# The queue node. Cassandra and NATS come from outside (see docker-compose.yml): with
# CASSANDRA_CONTACT_POINTS set, `npm start` starts no local JVM.
FROM node:24-bookworm-slim

WORKDIR /app
RUN chown node:node /app
USER node
ENV NODE_ENV=production \
    CASSANDRA_CONTACT_POINTS=cassandra:9042 \
    CASSANDRA_LOCAL_DC=datacenter1 \
    TRANSPORTER=nats://nats:4222 \
    PORT=3000

COPY --chown=node:node package.json package-lock.json ./
# Dev dependencies are kept: `npm start` runs the TypeScript entry point through tsx.
RUN npm ci --include=dev --no-audit --no-fund

COPY --chown=node:node . .
RUN npm run build

EXPOSE 3000
# tsx directly rather than through npm, so SIGTERM from `docker stop` reaches the broker.
CMD ["node_modules/.bin/tsx", "scripts/start.ts"]
