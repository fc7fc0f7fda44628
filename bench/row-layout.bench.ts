/**
 * What a log row layout costs, by the driver alone: batches of 32 events written as one row each
 * plus a marker row (an unlogged single-partition batch, as the queue writes them), against the
 * same events in one blob of one row. Prints events/s and CPU per event of this process and of the
 * local Cassandra JVM (from /proc). 1,500 batches of 32 events of 90 bytes, 4 in flight, twice.
 *
 *   BENCH_IN_FLIGHT=1 npx tsx bench/row-layout.bench.ts  # one batch at a time (default 4)
 *   BENCH_IN_FLIGHT=1 BENCH_GAP_US=1500 npx tsx bench/row-layout.bench.ts  # the client busy for 1.5 ms
 *                                                    # between batches, as the queue's node in a drain
 *   npx tsx bench/row-layout.bench.ts      # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 */
import { randomBytes } from "node:crypto";
import { types } from "cassandra-driver";
import { driverBench, processCpu, threadGroupCpu, threadGroupsPerTask } from "./harness";

const EVENTS = 32;
const BATCHES = Number(process.env.BENCH_BATCHES ?? 1500);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 4);
/** CPU the client burns after each batch before it writes the next (µs): Cassandra idles meanwhile. */
const GAP_US = Number(process.env.BENCH_GAP_US ?? 0);

function busy(us: number): void {
  const until = performance.now() + us / 1000;
  while (performance.now() < until);
}
const TTL = 7 * 86_400;

/** A batch's events as one blob: each a kind byte and a length, then 90 random bytes. */
function eventsBlob(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const ev = randomBytes(90);
    const head = Buffer.alloc(5);
    head[0] = 2;
    head.writeUInt32BE(ev.length, 1);
    parts.push(head, ev);
  }
  return Buffer.concat(parts);
}

async function main(): Promise<void> {
  const bench = await driverBench("bench_rows");
  const { client, ks, pid } = bench;
  await client.execute(
    `CREATE TABLE ${ks}.log (queue text, range_id bigint, bucket int, pos int, kind int, ev blob, batch_end int,
     evs blob, sealed boolean static, PRIMARY KEY ((queue, range_id, bucket), pos))`,
  );
  const write = { prepare: true, consistency: types.consistencies.localQuorum };
  const range = types.Long.fromNumber(1);
  const rows = async (queue: string, b: number) => {
    const queries: { query: string; params: unknown[] }[] = [];
    for (let i = 0; i < EVENTS; i++) {
      queries.push({
        query: `INSERT INTO ${ks}.log (queue, range_id, bucket, pos, kind, ev) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?`,
        params: [queue, range, b % 100, (b * EVENTS + i) % 16384, 2, randomBytes(90), TTL],
      });
    }
    queries.push({
      query: `INSERT INTO ${ks}.log (queue, range_id, bucket, pos, batch_end) VALUES (?, ?, ?, ?, ?) USING TTL ?`,
      params: [queue, range, b % 100, 2 ** 20 + b, b + EVENTS, TTL],
    });
    await client.batch(queries, { ...write, logged: false });
  };
  const blob = async (queue: string, b: number) => {
    await client.execute(
      `INSERT INTO ${ks}.log (queue, range_id, bucket, pos, batch_end, evs) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?`,
      [queue, range, b % 100, 2 ** 21 + b, b + EVENTS, eventsBlob(), TTL],
      write,
    );
  };
  // What the queue writes: the batch's events as one run row, and its marker row (one partition).
  const runAndMarker = async (queue: string, b: number) => {
    const pos = (b * EVENTS) % 16384;
    await client.batch(
      [
        {
          query: `INSERT INTO ${ks}.log (queue, range_id, bucket, pos, evs) VALUES (?, ?, ?, ?, ?) USING TTL ?`,
          params: [queue, range, b % 100, pos, eventsBlob(), TTL],
        },
        {
          query: `INSERT INTO ${ks}.log (queue, range_id, bucket, pos, batch_end) VALUES (?, ?, ?, ?, ?) USING TTL ?`,
          params: [queue, range, b % 100, 2 ** 20 + pos, pos + EVENTS, TTL],
        },
      ],
      { ...write, logged: false },
    );
  };
  const layouts = (process.env.BENCH_LAYOUTS ?? "rows,blob").split(",");
  const all = {
    rows: ["a row per event", rows],
    blob: ["one blob per batch", blob],
    run: ["a run row + marker", runAndMarker],
  } as const;
  try {
    for (const [name, run] of [...layouts, ...layouts].map(l => all[l as keyof typeof all])) {
      for (let i = 0; i < 200; i++) await run(`warm-${name}`, i);
      const queue = `${name}-${randomBytes(2).toString("hex")}`;
      const cpu0 = process.cpuUsage();
      const jvm0 = processCpu(pid);
      const threads0 = threadGroupCpu(pid);
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: IN_FLIGHT }, async () => {
          for (let b = next++; b < BATCHES; b = next++) {
            await run(queue, b);
            if (GAP_US > 0) busy(GAP_US);
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const jvm = processCpu(pid) - jvm0;
      const events = BATCHES * EVENTS;
      console.log(
        `${name.padEnd(20)} ${Math.round(events / secs)} events/s; CPU per event: client ` +
          `${((cpu.user + cpu.system) / events).toFixed(2)} µs, Cassandra ${((jvm * 1e6) / events).toFixed(2)} µs ` +
          `(${((jvm * 1e6) / BATCHES).toFixed(0)} µs per batch)`,
      );
      console.log(
        `  Cassandra CPU by thread, ms per batch: ${threadGroupsPerTask(threads0, threadGroupCpu(pid), BATCHES, 4)}`,
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
