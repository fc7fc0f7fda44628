/**
 * Broker options for `npm start` (and moleculer-runner), read from the environment like
 * moleculer-runner does: TRANSPORTER, NAMESPACE, NODEID, LOGLEVEL. Metrics and tracing are off.
 */
import type { BrokerOptions, LogLevels } from "moleculer";
import { ConfigurationError } from "./lib/errors";

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
  const transporter = env.TRANSPORTER?.trim();
  if (transporter && transporter !== "none" && !/^[a-z][a-z0-9+.-]*:\/\/\S+$/i.test(transporter)) {
    throw new ConfigurationError(
      "TRANSPORTER",
      `TRANSPORTER=${transporter} is not a transporter URL: use e.g. nats://127.0.0.1:4222, or none for a local-only broker`,
    );
  }
  return {
    namespace: env.NAMESPACE || "",
    nodeID: env.NODEID || null,
    // A URL string is resolved by Moleculer at run time; its type names only the short names.
    transporter: transporter && transporter !== "none" ? (transporter as BrokerOptions["transporter"]) : null,
    logger: {
      type: "Console",
      options: { level: logLevel, formatter: "short", colors: Boolean(process.stdout.isTTY) },
    },
    logLevel,
    requestTimeout: 10_000,
    metrics: false,
    tracing: false,
  };
}

export default brokerOptionsFromEnv();
