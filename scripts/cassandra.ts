/**
 * `npm run cassandra`: runs a local Cassandra for development, its data kept in
 * .cache/cassandra/dev-data (or CASSANDRA_DATA_DIR), until Ctrl-C.
 *
 * `npm run cassandra -- --nodes 3`: a 3-node cluster on 127.0.0.2-4 instead (each node with its
 * own token and a 512 MB heap, data in .cache/cassandra/cluster), for fault runs; create the
 * keyspace with QUEUE_REPLICATION_FACTOR=3.
 */
import { join } from "node:path";
import { cqlAnswers, defaultCacheDir, ensureCassandra, startLocalCluster } from "./cassandra-launcher";

function nodesArgument(argv: string[]): number {
  const i = argv.findIndex(a => a === "--nodes" || a.startsWith("--nodes="));
  if (i < 0) return 1;
  const raw = argv[i]!.includes("=") ? argv[i]!.split("=")[1] : argv[i + 1];
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 9) {
    console.error(`--nodes ${raw ?? ""} is not valid: give a number of nodes from 1 to 9`);
    process.exit(2);
  }
  return n;
}

async function cluster(n: number): Promise<void> {
  const c = await startLocalCluster({
    nodes: n,
    commitlogSync: process.env.CASSANDRA_COMMITLOG_SYNC === "batch" ? "batch" : "periodic",
  });
  const contactPoints = c.contactPoints.join(",");
  console.log(`A ${n}-node Cassandra cluster is running at ${contactPoints} (data center ${c.localDataCenter}).`);
  console.log(`Use it from another shell with:`);
  console.log(
    `  export CASSANDRA_CONTACT_POINTS=${contactPoints} CASSANDRA_LOCAL_DC=${c.localDataCenter} QUEUE_REPLICATION_FACTOR=${n}`,
  );
  console.log("Press Ctrl-C to stop it.");
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping the cluster…`);
    c.stop().then(
      () => process.exit(0),
      (error: Error) => {
        console.error(error.message);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  await new Promise(() => undefined);
}

async function main(): Promise<void> {
  const nodes = nodesArgument(process.argv.slice(2));
  if (nodes > 1) return cluster(nodes);
  const configured = process.env.CASSANDRA_CONTACT_POINTS;
  if (configured) {
    const first = configured.split(",")[0]!.trim();
    const dc = process.env.CASSANDRA_LOCAL_DC || "datacenter1";
    const answers = await cqlAnswers(first, dc);
    console.log(
      answers
        ? `CASSANDRA_CONTACT_POINTS is set and ${first} answers: nothing to start (unset it to run a local one).`
        : `CASSANDRA_CONTACT_POINTS is set to ${configured} but ${first} does not answer in ${dc}: unset it to run a local one.`,
    );
    process.exit(answers ? 0 : 1);
  }

  const handle = await ensureCassandra({
    mode: "jvm",
    dataDir: process.env.CASSANDRA_DATA_DIR ?? join(defaultCacheDir(), "dev-data"),
  });
  const contactPoints = handle.contactPoints.join(",");
  console.log(`Cassandra is running at ${contactPoints} (data center ${handle.localDataCenter}).`);
  console.log(`Use it from another shell with:`);
  console.log(`  export CASSANDRA_CONTACT_POINTS=${contactPoints} CASSANDRA_LOCAL_DC=${handle.localDataCenter}`);
  if (handle.logFile) console.log(`Its log: ${handle.logFile}`);
  console.log("Press Ctrl-C to stop it.");

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping Cassandra…`);
    handle.stop().then(
      () => process.exit(0),
      (error: Error) => {
        console.error(error.message);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));

  const code = await handle.exited;
  if (!stopping) {
    console.error(`Cassandra exited on its own (code ${code}); see ${handle.logFile}`);
    process.exit(1);
  }
}

main().catch((error: Error) => {
  console.error(error.message);
  process.exit(1);
});
