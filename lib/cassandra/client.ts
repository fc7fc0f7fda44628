/**
 * The project's one way to open a Cassandra session: settings from the environment, one
 * `cassandra.Client` with the consistency levels the queue relies on, and connection failures
 * turned into one-line errors that say what to do.
 */
import { Client, auth, errors as driverErrors, types, type ClientOptions } from "cassandra-driver";
import { ConfigurationError, StorageUnavailableError } from "../errors";

export interface CassandraConfig {
  /** "host" or "host:port" entries (IPv6 as "[addr]:port"). */
  contactPoints: string[];
  localDataCenter: string;
  keyspace?: string;
  username?: string;
  password?: string;
}

export interface ConnectOptions {
  /** Connection attempts before giving up when no host answers. @defaultValue 3 */
  attempts?: number;
  /** Pause between attempts. @defaultValue 1000 */
  retryDelayMs?: number;
  /** Debounce of schema change events; tests create keyspaces and want it short. @defaultValue 20 under jest, else 1000 */
  refreshSchemaDelayMs?: number;
}

const DEFAULT_PORT = 9042;
const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]{0,47}$/;

/** Reads CASSANDRA_CONTACT_POINTS (comma separated), CASSANDRA_LOCAL_DC, CASSANDRA_KEYSPACE, CASSANDRA_USERNAME, CASSANDRA_PASSWORD. */
export function cassandraConfigFromEnv(env: NodeJS.ProcessEnv = process.env): CassandraConfig {
  const contactPoints = (env.CASSANDRA_CONTACT_POINTS ?? "")
    .split(",")
    .map(s => s.trim())
    .filter(Boolean);
  if (contactPoints.length === 0) {
    throw new ConfigurationError(
      "CASSANDRA_CONTACT_POINTS",
      "CASSANDRA_CONTACT_POINTS is not set: start a Cassandra with `npm run cassandra` and set CASSANDRA_CONTACT_POINTS=127.0.0.1:9042",
    );
  }
  const config: CassandraConfig = { contactPoints, localDataCenter: env.CASSANDRA_LOCAL_DC || "datacenter1" };
  if (env.CASSANDRA_KEYSPACE) config.keyspace = env.CASSANDRA_KEYSPACE;
  if (env.CASSANDRA_USERNAME) config.username = env.CASSANDRA_USERNAME;
  if (env.CASSANDRA_PASSWORD) config.password = env.CASSANDRA_PASSWORD;
  return config;
}

/** Builds the driver options for `config` (exported for tests and tools that need a second client). */
export function cassandraClientOptions(config: CassandraConfig, options: ConnectOptions = {}): ClientOptions {
  validate(config);
  const parsed = config.contactPoints.map(parseContactPoint);
  const ports = new Set(parsed.map(p => p.port ?? DEFAULT_PORT));
  // The driver uses protocolOptions.port for the peers it discovers; with one common port the
  // contact points are given as bare hosts, otherwise each keeps its own port.
  const samePort = ports.size === 1;
  const port = samePort ? [...ports][0]! : DEFAULT_PORT;
  const clientOptions: ClientOptions = {
    contactPoints: samePort ? parsed.map(p => p.host) : config.contactPoints,
    localDataCenter: config.localDataCenter,
    protocolOptions: { port },
    queryOptions: {
      prepare: true,
      consistency: types.consistencies.localQuorum,
      serialConsistency: types.consistencies.localSerial,
    },
    socketOptions: { connectTimeout: 5000, readTimeout: 12000, keepAlive: true, tcpNoDelay: true },
    refreshSchemaDelay: options.refreshSchemaDelayMs ?? (process.env.JEST_WORKER_ID ? 20 : 1000),
  };
  if (config.keyspace) clientOptions.keyspace = config.keyspace;
  if (config.username) {
    clientOptions.authProvider = new auth.PlainTextAuthProvider(config.username, config.password ?? "");
  }
  return clientOptions;
}

/**
 * Opens one connected client. Retries while no host answers; throws ConfigurationError for
 * settings that no retry can fix, StorageUnavailableError when Cassandra cannot be reached.
 */
export async function connectCassandra(config: CassandraConfig, options: ConnectOptions = {}): Promise<Client> {
  const clientOptions = cassandraClientOptions(config, options);
  const attempts = Math.max(1, options.attempts ?? 3);
  const where = config.contactPoints.join(",");
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const client = new Client(clientOptions);
    try {
      await client.connect();
      return client;
    } catch (error) {
      lastError = error;
      await client.shutdown().catch(() => {});
      const fatal = describeFatal(error, config);
      if (fatal) throw fatal;
      if (attempt < attempts) await sleep(options.retryDelayMs ?? 1000);
    }
  }
  throw new StorageUnavailableError(
    "connect",
    `Cannot reach Cassandra at ${where}: start one with \`npm run cassandra\` or fix CASSANDRA_CONTACT_POINTS` +
      ` (${firstLine(lastError)})`,
  );
}

function validate(config: CassandraConfig): void {
  if (config.contactPoints.length === 0) {
    throw new ConfigurationError("CASSANDRA_CONTACT_POINTS", "CASSANDRA_CONTACT_POINTS is empty: set it to host:port");
  }
  if (!config.localDataCenter) {
    throw new ConfigurationError("CASSANDRA_LOCAL_DC", "CASSANDRA_LOCAL_DC is empty: set it to the data center name");
  }
  if (config.keyspace !== undefined && !IDENTIFIER.test(config.keyspace)) {
    throw new ConfigurationError(
      "CASSANDRA_KEYSPACE",
      `CASSANDRA_KEYSPACE=${config.keyspace} is not a valid keyspace name: use a letter then letters, digits or _ (48 at most)`,
    );
  }
  if (config.password && !config.username) {
    throw new ConfigurationError(
      "CASSANDRA_USERNAME",
      "CASSANDRA_PASSWORD is set without CASSANDRA_USERNAME: set both",
    );
  }
}

function parseContactPoint(contactPoint: string): { host: string; port?: number } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(contactPoint);
  const plain = /^([^:[\]]+)(?::(\d+))?$/.exec(contactPoint);
  const match = bracketed ?? plain;
  const port = match?.[2] === undefined ? undefined : Number(match[2]);
  if (!match || (port !== undefined && (port < 1 || port > 65535))) {
    throw new ConfigurationError(
      "CASSANDRA_CONTACT_POINTS",
      `CASSANDRA_CONTACT_POINTS entry "${contactPoint}" is not host or host:port (IPv6: [addr]:port)`,
    );
  }
  return port === undefined ? { host: match[1]! } : { host: match[1]!, port };
}

/** The error for failures a retry cannot fix, or undefined. */
function describeFatal(error: unknown, config: CassandraConfig): Error | undefined {
  const message = error instanceof Error ? error.message : String(error);
  const dcMismatch = /localDataCenter was configured as '.*', but only found hosts in data centers: \[(.*)\]/.exec(
    message,
  );
  if (dcMismatch) {
    const seen = dcMismatch[1] ?? "";
    return new ConfigurationError(
      "CASSANDRA_LOCAL_DC",
      `CASSANDRA_LOCAL_DC=${config.localDataCenter} does not match the data centers of the cluster at ` +
        `${config.contactPoints.join(",")} (${seen || "none found"}): set CASSANDRA_LOCAL_DC to one of them`,
    );
  }
  if (error instanceof driverErrors.NoHostAvailableError) {
    const inner = Object.values(error.innerErrors ?? {}) as unknown[];
    const authFailure = inner.find(e => e instanceof driverErrors.AuthenticationError);
    if (authFailure) {
      return new ConfigurationError(
        "CASSANDRA_USERNAME",
        `Cassandra at ${config.contactPoints.join(",")} refused the credentials of user ` +
          `${config.username ?? "(none)"}: check CASSANDRA_USERNAME and CASSANDRA_PASSWORD`,
      );
    }
    return undefined;
  }
  if (error instanceof driverErrors.ResponseError && config.keyspace && /keyspace/i.test(message)) {
    return new ConfigurationError(
      "CASSANDRA_KEYSPACE",
      `CASSANDRA_KEYSPACE=${config.keyspace} does not exist in the cluster at ${config.contactPoints.join(",")}: create it or fix the setting`,
    );
  }
  if (error instanceof driverErrors.ArgumentError) {
    return new ConfigurationError("CASSANDRA_CONTACT_POINTS", `Invalid Cassandra settings: ${firstLine(error)}`);
  }
  return undefined;
}

function firstLine(error: unknown): string {
  // "All host(s) tried for query failed…" says less than the first host's own error.
  const inner =
    error instanceof driverErrors.NoHostAvailableError ? Object.values(error.innerErrors ?? {})[0] : undefined;
  const cause = inner ?? error;
  const message = cause instanceof Error ? cause.message : String(cause);
  return message.split("\n")[0]!.trim();
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolvePromise => setTimeout(resolvePromise, ms));
}
