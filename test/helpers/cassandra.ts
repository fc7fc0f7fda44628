/** Cassandra helpers for integration tests: each test file works in its own throwaway keyspace. */
import { randomBytes } from "node:crypto";
import type { Client } from "cassandra-driver";
import { cassandraConfigFromEnv, connectCassandra } from "../../lib/cassandra/client";

/** A client for the run's Cassandra (started by test/global-setup.ts); the caller shuts it down. */
export async function testClient(): Promise<Client> {
  if (!process.env.CASSANDRA_CONTACT_POINTS) {
    throw new Error(
      "CASSANDRA_CONTACT_POINTS is not set in this test worker: run the tests with `npm test` or `npx jest` " +
        "so that test/global-setup.ts starts a Cassandra, or set it to a running one",
    );
  }
  return connectCassandra(cassandraConfigFromEnv());
}

/** A fresh keyspace name: `prefix` reduced to [a-z0-9_], then a random suffix; 48 characters at most. */
export function uniqueKeyspace(prefix: string): string {
  let base = prefix.toLowerCase().replace(/[^a-z0-9_]+/g, "_");
  if (!/^[a-z]/.test(base)) base = `t_${base}`;
  return `${base.slice(0, 35)}_${randomBytes(6).toString("hex")}`;
}

/** Creates `keyspace` (SimpleStrategy, replication factor 1) and returns its name. */
export async function createKeyspace(client: Client, keyspace: string): Promise<string> {
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
  );
  return keyspace;
}

export async function dropKeyspace(client: Client, keyspace: string): Promise<void> {
  await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
}
