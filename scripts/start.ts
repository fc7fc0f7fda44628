/**
 * `npm start`: a Moleculer node with the project's services. Without CASSANDRA_CONTACT_POINTS it
 * first starts a local Cassandra (data in .cache/cassandra/dev-data) and stops it on exit; it builds
 * the operator console first when dist-console/ is missing or stale.
 */
import { join } from "node:path";
import { checkNodeEnv, startQueueNode, type QueueNode } from "../lib/server";
import { defaultCacheDir, ensureCassandra, type CassandraHandle } from "./cassandra-launcher";
import { DEV_API_SECRET_FILE, developmentSecret } from "./dev-secret";
import { canBuildConsole, consoleBuildIsFresh, ensureConsoleBuilt } from "./console-build";

let node: QueueNode | undefined;
let cassandra: CassandraHandle | undefined;
let stopping = false;

async function main(): Promise<void> {
  process.on("SIGINT", () => void shutdown("SIGINT", 0));
  process.on("SIGTERM", () => void shutdown("SIGTERM", 0));

  // `npm start` on a developer's machine: development mode unless told otherwise (Docker sets
  // production). In development the keys service and the gateway generate local secrets.
  process.env.NODE_ENV ||= "development";
  const env = process.env;
  if (env.NODE_ENV === "development" && !env.API_JWT_SECRET && !env.API_JWT_PUBLIC_KEY && !env.API_AUTH_ACTION) {
    const { secret, created } = developmentSecret(DEV_API_SECRET_FILE);
    env.API_JWT_SECRET = secret;
    if (created)
      console.warn(`Development mode: created an HTTP API secret in ${DEV_API_SECRET_FILE} (npm run token uses it)`);
  }

  // Bad settings fail before anything is started.
  checkNodeEnv(env);

  // A checkout serves its console at once: built here when missing or older than its sources.
  if (canBuildConsole() && !consoleBuildIsFresh()) {
    console.log("Building the operator console (dist-console/ is missing or older than console/)…");
    try {
      await ensureConsoleBuilt();
    } catch (error) {
      console.warn(`The console could not be built; /console/ answers 503 until \`npm run build:console\` works:`);
      console.warn((error as Error).message.split("\n").slice(0, 5).join("\n"));
    }
  }

  if (!env.CASSANDRA_CONTACT_POINTS) {
    cassandra = await ensureCassandra({
      dataDir: env.CASSANDRA_DATA_DIR ?? join(defaultCacheDir(), "dev-data"),
      reuseIfRunning: true,
    });
    env.CASSANDRA_CONTACT_POINTS = cassandra.contactPoints.join(",");
    env.CASSANDRA_LOCAL_DC = cassandra.localDataCenter;
    void cassandra.exited?.then(code => {
      if (!stopping) {
        console.error(`Cassandra exited on its own (code ${code}); see ${cassandra?.logFile}`);
        void shutdown("Cassandra exit", 1);
      }
    });
  }
  if (stopping) return;

  node = await startQueueNode(env, line => console.log(line), "npm run token -- --owner <owner> --service '*'");
  console.log("Ctrl-C stops it.");
}

/** Stops the broker first (its services still need Cassandra while they stop), then Cassandra. */
async function shutdown(reason: string, exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  if (reason.startsWith("SIG")) console.log(`\n${reason}: stopping…`);
  try {
    await node?.stop();
  } catch (error) {
    console.error(`Stopping the broker failed: ${(error as Error).message}`);
    exitCode = exitCode || 1;
  }
  try {
    await cassandra?.stop();
  } catch (error) {
    console.error(`Stopping Cassandra failed: ${(error as Error).message}`);
    exitCode = exitCode || 1;
  }
  process.exit(exitCode);
}

main().catch((error: Error) => {
  console.error(error.message.split("\n")[0]);
  void shutdown("error", 1);
});
