/**
 * Starts one Cassandra for the whole jest run (or uses CASSANDRA_CONTACT_POINTS) and hands its
 * address to the test workers through the environment they inherit.
 */
import { ensureCassandra, type CassandraHandle } from "../scripts/cassandra-launcher";

declare global {
  var __TEST_CASSANDRA__: CassandraHandle | undefined;
}

export default async function globalSetup(): Promise<void> {
  const handle = await ensureCassandra({
    // Durable writes: tests that restart Cassandra expect to lose nothing that was acknowledged.
    commitlogSync: process.env.CASSANDRA_COMMITLOG_SYNC === "periodic" ? "periodic" : "batch",
    // Free ports unless configured, so a dev Cassandra on 9042 or a second run does not collide.
    nativePort: process.env.CASSANDRA_NATIVE_PORT ? undefined : 0,
    storagePort: process.env.CASSANDRA_STORAGE_PORT ? undefined : 0,
  }).catch((error: Error) => {
    throw new Error(
      `The tests need a Cassandra and none could be had: ${error.message}\n` +
        "Fix that, or point the tests at a running one with CASSANDRA_CONTACT_POINTS=host:port (and CASSANDRA_LOCAL_DC).",
    );
  });
  globalThis.__TEST_CASSANDRA__ = handle;
  process.env.CASSANDRA_CONTACT_POINTS = handle.contactPoints.join(",");
  process.env.CASSANDRA_LOCAL_DC = handle.localDataCenter;
}
