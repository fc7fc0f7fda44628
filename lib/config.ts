/**
 * The standalone deployment's settings, read from the environment. Every variable is documented in
 * the README's configuration table; a bad value is a ConfigurationError naming the variable.
 */
import { ConfigurationError } from "./errors";
import type { QueueEngineOptions } from "./queue/options";

export interface QueueDeploymentSettings {
  serviceName: string;
  engine: Partial<QueueEngineOptions>;
  activityService: string;
  keysService: string;
  /** Run the project's own keys service on this node. */
  keysEnabled: boolean;
  maxValueBytes: number;
  maxValueDepth: number;
  /** Largest HTTP body. */
  bodyLimitBytes: number;
}

function positive(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  { integer = true, zero = false } = {},
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  const ok = Number.isFinite(n) && (zero ? n >= 0 : n > 0) && (!integer || Number.isInteger(n));
  if (!ok)
    throw new ConfigurationError(
      name,
      `${name}=${raw} is not a ${integer ? "whole " : ""}number${zero ? " >= 0" : " > 0"}`,
    );
  return n;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes", "on"].includes(raw)) return true;
  if (["0", "false", "no", "off"].includes(raw)) return false;
  throw new ConfigurationError(name, `${name}=${env[name]} is not a boolean: use true or false`);
}

export function queueSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): QueueDeploymentSettings {
  const keyspace = env.QUEUE_KEYSPACE || "worker_queue";
  if (!/^[a-z][a-z0-9_]{0,47}$/.test(keyspace)) {
    throw new ConfigurationError(
      "QUEUE_KEYSPACE",
      `QUEUE_KEYSPACE=${keyspace} is not a keyspace name: use a-z, 0-9, _`,
    );
  }
  const rf = positive(env, "QUEUE_REPLICATION_FACTOR", 1);
  const dcs = env.QUEUE_DATACENTERS?.trim();
  // NetworkTopologyStrategy for clusters ("dc1:3,dc2:3"), SimpleStrategy for one node.
  let replication = `{'class': 'SimpleStrategy', 'replication_factor': ${rf}}`;
  if (dcs) {
    const parts = dcs.split(",").map(p => p.trim().split(":"));
    if (parts.some(p => p.length !== 2 || !/^[\w-]+$/.test(p[0]!) || !/^\d+$/.test(p[1]!))) {
      throw new ConfigurationError("QUEUE_DATACENTERS", `QUEUE_DATACENTERS=${dcs} must look like dc1:3,dc2:3`);
    }
    replication = `{'class': 'NetworkTopologyStrategy', ${parts.map(([dc, n]) => `'${dc}': ${n}`).join(", ")}}`;
  }
  const serialScope = env.QUEUE_SERIAL_SCOPE || (parts(dcs) > 1 ? "global" : "local");
  if (serialScope !== "local" && serialScope !== "global") {
    throw new ConfigurationError("QUEUE_SERIAL_SCOPE", `QUEUE_SERIAL_SCOPE=${serialScope}: use local or global`);
  }
  return {
    serviceName: env.QUEUE_SERVICE_NAME || "worker.queue",
    engine: {
      keyspace,
      replication,
      serialScope,
      retentionSeconds: Math.round(positive(env, "QUEUE_RETENTION_DAYS", 7, { integer: false }) * 86_400),
      maxAttempts: positive(env, "QUEUE_MAX_ATTEMPTS", 20, { zero: true }),
      ownerLeaseMs: positive(env, "QUEUE_OWNER_LEASE_MS", 15_000),
      beatIntervalMs: positive(env, "QUEUE_BEAT_INTERVAL_MS", 500),
      nodeTimeoutMs: positive(env, "QUEUE_NODE_TIMEOUT_MS", 1500),
      forwardTimeoutMs: positive(env, "QUEUE_FORWARD_TIMEOUT_MS", 3000),
      windowMax: positive(env, "QUEUE_WINDOW_MAX", 512),
      checkpointEvents: positive(env, "QUEUE_CHECKPOINT_EVENTS", 2000),
      fenceLeaseMs: positive(env, "QUEUE_FENCE_LEASE_MS", 200, { zero: true }),
    },
    activityService: env.QUEUE_ACTIVITY_SERVICE || "flow.activity",
    keysService: env.KEYS_SERVICE || "keys",
    keysEnabled: flag(env, "KEYS_ENABLED", true),
    maxValueBytes: positive(env, "QUEUE_MAX_VALUE_BYTES", 1024 * 1024),
    maxValueDepth: positive(env, "QUEUE_MAX_VALUE_DEPTH", 64),
    bodyLimitBytes: positive(env, "API_BODY_LIMIT_BYTES", 1024 * 1024),
  };
}

function parts(dcs: string | undefined): number {
  return dcs ? dcs.split(",").length : 0;
}
