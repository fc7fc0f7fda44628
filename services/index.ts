/**
 * The services a standalone node runs (`npm start`, Docker): the keys service (unless an external
 * one is used), the queue, and the HTTP gateway. Configuration comes from the environment
 * (lib/config.ts, documented in the README).
 */
import type { ServiceSchema } from "moleculer";
import { queueSettingsFromEnv } from "../lib/config";
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
    }),
  );
  return schemas;
}
