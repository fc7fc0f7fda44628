/**
 * What task_index entries cost by the driver alone: one INSERT per entry (64 in flight) against
 * unlogged batches of 8 entries of 8 partitions (8 in flight), as the queue writes them since the
 * entries of a commit's adds are grouped. Prints rows/s and CPU per row of this process and of the
 * local Cassandra JVM (from /proc), three alternating rounds.
 *
 *   BENCH_ROWS=30000 npx tsx bench/index-writes.bench.ts  # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 */
import { randomUUID } from "node:crypto";
import { types } from "cassandra-driver";
import { INDEX_BATCH } from "../lib/queue/derived-writer";
import { driverBench, processCpu } from "./harness";

const ROWS = Number(process.env.BENCH_ROWS ?? 30_000);
const TTL = 7 * 86_400;

async function main(): Promise<void> {
  const bench = await driverBench("bench_index");
  const { client, ks, pid } = bench;
  await client.execute(
    `CREATE TABLE ${ks}.task_index (queue text, task_id text, seq bigint, pos bigint, client_id boolean, hint tinyint,
     PRIMARY KEY ((queue, task_id)))`,
  );
  const query = `INSERT INTO ${ks}.task_index (queue, task_id, seq, pos, client_id, hint) VALUES (?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?`;
  const options = { prepare: true, consistency: types.consistencies.localQuorum, isIdempotent: true };
  const queue = randomUUID();
  const params = (i: number) => {
    const n = types.Long.fromNumber(i);
    return [queue, randomUUID(), n, n, false, 0, TTL, n];
  };
  try {
    for (const group of [1, INDEX_BATCH, 1, INDEX_BATCH, 1, INDEX_BATCH]) {
      const inFlight = Math.max(1, Math.floor(64 / group));
      const cpu0 = process.cpuUsage();
      const jvm0 = processCpu(pid);
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          for (let b = next; b < ROWS; b = next) {
            next += group;
            if (group === 1) await client.execute(query, params(b), options);
            else
              await client.batch(
                Array.from({ length: Math.min(group, ROWS - b) }, (_, k) => ({ query, params: params(b + k) })),
                { ...options, logged: false },
              );
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const jvm = processCpu(pid) - jvm0;
      console.log(
        `${group === 1 ? "one INSERT per entry      " : `batches of ${group} partitions   `} ${Math.round(ROWS / secs)} rows/s; ` +
          `CPU per row: client ${((cpu.user + cpu.system) / ROWS).toFixed(1)} µs, Cassandra ${((jvm * 1e6) / ROWS).toFixed(1)} µs`,
      );
    }
  } finally {
    await bench.close();
  }
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  },
);
