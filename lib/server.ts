/**
 * A standalone queue node: a Moleculer broker with the project's services (services/index.ts),
 * configured from the environment (lib/broker-options.ts, lib/config.ts). This is what the Docker
 * image runs (`node dist/lib/server-main.js`, compiled, without dev dependencies) and what
 * `npm start` runs after its development conveniences (a local Cassandra, development secrets, the
 * console build). It needs a Cassandra (CASSANDRA_CONTACT_POINTS) and, in production, the secrets.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ServiceBroker } from "moleculer";
import { serviceSchemas } from "../services";
import { cassandraConfigFromEnv, connectCassandra } from "./cassandra/client";
import { queueSettingsFromEnv } from "./config";
import { loadMasterKey, loadPreviousMasterKeys } from "./crypto/master-key";
import { OwnerKeyStore, type RewrapReport } from "./crypto/owner-key-store";
import { brokerOptionsFromEnv } from "./broker-options";
import { ConfigurationError } from "./errors";
import { defaultConsoleFolders } from "./http/console";

export interface QueueNode {
  broker: ServiceBroker;
  /** Stops the broker (its queues are handed over first). */
  stop(): Promise<void>;
}

/** The settings a node reads from the environment, checked: throws ConfigurationError naming the variable. */
export function checkNodeEnv(env: NodeJS.ProcessEnv): void {
  brokerOptionsFromEnv(env);
  const port = env.PORT;
  if (port !== undefined && port !== "" && !/^\d{1,5}$/.test(port)) {
    throw new ConfigurationError("PORT", `PORT=${port} is not a port number: use 1-65535`);
  }
}

/** Starts a queue node; throws ConfigurationError naming the variable to fix before anything starts. */
export async function startQueueNode(
  env: NodeJS.ProcessEnv = process.env,
  log: (line: string) => void = line => console.log(line),
  /** How the log tells an operator to get a token for the console. */
  tokenHint = "queuectl token --owner <owner> --service '*'",
): Promise<QueueNode> {
  if (!env.CASSANDRA_CONTACT_POINTS) {
    throw new ConfigurationError(
      "CASSANDRA_CONTACT_POINTS",
      "CASSANDRA_CONTACT_POINTS is not set: give the Cassandra nodes as host:port,host:port",
    );
  }
  checkNodeEnv(env);
  const options = brokerOptionsFromEnv(env);
  const broker = new ServiceBroker({ ...options, skipProcessEventRegistration: true });
  for (const schema of serviceSchemas(env)) broker.createService(schema);
  await broker.start();

  const api = broker.getLocalService("api");
  const apiPort = (api?.settings as { port?: number } | undefined)?.port;
  if (apiPort) {
    log(`HTTP gateway listening on http://localhost:${apiPort}`);
    const built = defaultConsoleFolders().some(folder => existsSync(join(folder, "index.html")));
    log(
      `Operator console: http://localhost:${apiPort}/console/ ` +
        (built ? `(sign in with a token from \`${tokenHint}\`)` : "(not built: run `npm run build:console`)"),
    );
  }
  if (options.transporter && !env.TRANSIT_KEY) {
    log(
      "Warning: TRANSIT_KEY is not set. Grants authenticate callers, not the nodes that answer: any process that " +
        "can join the transporter can offer services and receive calls. Set TRANSIT_KEY on every node, or let only " +
        "trusted clients connect (NATS credentials, TLS).",
    );
  }
  log(
    `Ready: node ${broker.nodeID}, transporter ${describeTransporter(options.transporter)}, ` +
      `Cassandra ${env.CASSANDRA_CONTACT_POINTS}.`,
  );
  return { broker, stop: () => broker.stop() };
}

/** The transporter for the log: where, and whether with credentials and TLS, never a password. */
export function describeTransporter(transporter: unknown): string {
  if (!transporter) return "none (local only)";
  // Everything between "//" and the last "@" before the host may be credentials.
  if (typeof transporter === "string") return transporter.replace(/\/\/[^/]*@/g, "//***@");
  const t = transporter as { type?: string; options?: { servers?: string[]; user?: string; tls?: unknown } };
  const extras = [t.options?.user !== undefined ? "with credentials" : "", t.options?.tls ? "TLS" : ""].filter(Boolean);
  return `${t.type ?? "custom"} ${(t.options?.servers ?? []).join(",")}${extras.length ? ` (${extras.join(", ")})` : ""}`;
}

/**
 * Runs a queue node until SIGTERM / SIGINT, then stops it (handing its queues over) and exits;
 * a configuration error or a failed start exits with 1 and one line saying why.
 */
export function runQueueNode(env: NodeJS.ProcessEnv = process.env): void {
  let node: QueueNode | undefined;
  let stopping = false;
  const shutdown = async (reason: string, code: number) => {
    if (stopping) return;
    stopping = true;
    if (reason.startsWith("SIG")) console.log(`${reason}: stopping…`);
    try {
      await node?.stop();
    } catch (err) {
      console.error(`Stopping the broker failed: ${(err as Error).message}`);
      code = code || 1;
    }
    process.exit(code);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM", 0));
  process.on("SIGINT", () => void shutdown("SIGINT", 0));
  startQueueNode(env).then(
    started => {
      node = started;
      if (stopping) void started.stop();
    },
    (err: Error) => {
      console.error(err.message.split("\n")[0]);
      void shutdown("error", 1);
    },
  );
}

/**
 * `queue-node rewrap-keys`: re-wraps every owner key under the current master key (KEYS_MASTER_KEY),
 * unwrapping with it or one of KEYS_PREVIOUS_MASTER_KEYS; then the previous keys can be dropped.
 */
export async function rewrapOwnerKeys(env: NodeJS.ProcessEnv = process.env): Promise<RewrapReport> {
  if (!env.CASSANDRA_CONTACT_POINTS) {
    throw new ConfigurationError(
      "CASSANDRA_CONTACT_POINTS",
      "CASSANDRA_CONTACT_POINTS is not set: give the Cassandra nodes",
    );
  }
  const masterKey = loadMasterKey({ env, development: false });
  const previousMasterKeys = loadPreviousMasterKeys(undefined, env);
  const keyspace = queueSettingsFromEnv(env).engine.keyspace!;
  const client = await connectCassandra(cassandraConfigFromEnv(env));
  try {
    const store = new OwnerKeyStore({ client, keyspace, masterKey, previousMasterKeys });
    await store.init();
    return await store.rewrapAll();
  } finally {
    await client.shutdown();
  }
}
