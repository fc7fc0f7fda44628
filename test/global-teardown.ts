/** Stops the Cassandra that test/global-setup.ts started (nothing when it used an existing one). */
export default async function globalTeardown(): Promise<void> {
  const handle = globalThis.__TEST_CASSANDRA__;
  globalThis.__TEST_CASSANDRA__ = undefined;
  await handle?.stop();
}
