/**
 * The services a standalone node runs (`npm start`, Docker): the keys service (unless an external
 * one is used), the queue, and the HTTP gateway. Configuration comes from the environment
 * (lib/config.ts, documented in the README).
 */
import type { ServiceSchema } from "moleculer";
import { queueSettingsFromEnv } from "../lib/config";
import { createApiService } from "./api.service";
import { createKeysService } from "./keys.service";
import { createQueueService } from "./queue.service";

export function serviceSchemas(env: NodeJS.ProcessEnv = process.env): ServiceSchema[] {
  const s = queueSettingsFromEnv(env);
  const schemas: ServiceSchema[] = [];
  if (s.keysEnabled) {
    schemas.push(
      createKeysService({
        name: s.keysService,
        keyspace: s.engine.keyspace,
        replication: s.engine.replication,
        retentionDays: Math.ceil((s.engine.retentionSeconds ?? 604_800) / 86_400),
        env,
      }) as unknown as ServiceSchema,
    );
  }
  schemas.push(
    createQueueService({
      name: s.serviceName,
      engine: s.engine,
      keysService: s.keysService,
      activityService: s.activityService,
      maxValueBytes: s.maxValueBytes,
      maxValueDepth: s.maxValueDepth,
    }),
  );
  const authConfigured = Boolean(env.API_JWT_SECRET || env.API_JWT_PUBLIC_KEY || env.API_AUTH_ACTION);
  if (authConfigured || env.API_ENABLED === "true") {
    schemas.push(
      createApiService({
        queueService: s.serviceName,
        bodyLimit: s.bodyLimitBytes,
        port: env.PORT === undefined ? undefined : Number(env.PORT),
      }) as unknown as ServiceSchema,
    );
  }
  return schemas;
}
