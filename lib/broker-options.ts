/**
 * Broker options of a standalone queue node, read from the environment like moleculer-runner does:
 * TRANSPORTER, NAMESPACE, NODEID, LOGLEVEL (lib/transit.ts: NATS credentials, TLS and TRANSIT_KEY).
 * The ACL middleware guards the queue and the keys service; METRICS=true adds
 * Moleculer metrics with a Prometheus endpoint on METRICS_PORT.
 */
import type { BrokerOptions, LogLevels } from "moleculer";
import { ConfigurationError } from "./errors";
import { AclMiddleware } from "../middleware/acl.middleware";
import { transitMiddlewares, transporterFromEnv } from "./transit";

const LOG_LEVELS: readonly LogLevels[] = ["fatal", "error", "warn", "info", "debug", "trace"];

/** Builds the options from `env`; throws ConfigurationError naming the variable to fix. */
export function brokerOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): BrokerOptions {
  const logLevel = (env.LOGLEVEL || "info").toLowerCase() as LogLevels;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigurationError(
      "LOGLEVEL",
      `LOGLEVEL=${env.LOGLEVEL} is not valid: use one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  return {
    namespace: env.NAMESPACE || "",
    nodeID: env.NODEID || null,
    transporter: transporterFromEnv(env),
    logger: {
      type: "Console",
      options: { level: logLevel, formatter: "short", colors: Boolean(process.stdout.isTTY) },
    },
    logLevel,
    requestTimeout: 10_000,
    // Moleculer's own failure detection (the queue nodes also beat each other every 500 ms): a dead
    // node's pending calls are rejected within a few seconds instead of at the request timeout.
    heartbeatInterval: positiveSeconds(env, "HEARTBEAT_INTERVAL", 1),
    heartbeatTimeout: positiveSeconds(env, "HEARTBEAT_TIMEOUT", 3),
    middlewares: [
      AclMiddleware({
        services: [env.QUEUE_SERVICE_NAME || "worker.queue", env.KEYS_SERVICE || "keys"],
        aclAction: env.ACL_ACTION || undefined,
        env,
      }),
      ...transitMiddlewares(env),
    ],
    metrics: metricsFromEnv(env),
    tracing: false,
  };
}

function positiveSeconds(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new ConfigurationError(name, `${name}=${raw} is not a number of seconds > 0`);
  return n;
}

function metricsFromEnv(env: NodeJS.ProcessEnv): BrokerOptions["metrics"] {
  const on = (env.METRICS ?? "").toLowerCase();
  if (!["true", "1", "yes", "on"].includes(on)) return false;
  const port = Number(env.METRICS_PORT || 3030);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigurationError("METRICS_PORT", `METRICS_PORT=${env.METRICS_PORT} is not a port number`);
  }
  return { enabled: true, reporter: [{ type: "Prometheus", options: { port, path: "/metrics" } }] };
}
