/**
 * `npm run cassandra`: runs a local Cassandra for development, its data kept in
 * .cache/cassandra/dev-data (or CASSANDRA_DATA_DIR), until Ctrl-C.
 */
import { join } from "node:path";
import { cqlAnswers, defaultCacheDir, ensureCassandra } from "../lib/cassandra/launcher";

async function main(): Promise<void> {
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
