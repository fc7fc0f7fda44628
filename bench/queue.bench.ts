/**
 * Queue benchmark through broker.call, encryption included (the keys service and the queue on one
 * broker, against a real Cassandra). Prints p50 / p99 of add, fetch of a new task, repeated fetch,
 * empty fetch and ack, then end-to-end throughput with 1, 8 and 32 workers.
 *
 *   npm run bench                      # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 *   BENCH_TASKS=5000 BENCH_SECONDS=10 npm run bench
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { meta, percentile, startBenchNode, value } from "./harness";

const TASKS = Number(process.env.BENCH_TASKS ?? 2000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const opts = { meta };

function report(name: string, samples: number[]): void {
  const s = [...samples].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  console.log(
    `${name.padEnd(26)} n=${String(s.length).padStart(6)}  p50 ${percentile(s, 50).toFixed(3)} ms  p99 ${percentile(s, 99).toFixed(3)} ms  mean ${mean.toFixed(3)} ms`,
  );
}

async function timed<T>(samples: number[], fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  samples.push(performance.now() - t0);
  return r;
}

async function latencies(broker: ServiceBroker, print: boolean): Promise<void> {
  const serviceId = randomUUID();
  const add: number[] = [];
  const fetchNew: number[] = [];
  const fetchAgain: number[] = [];
  const fetchEmpty: number[] = [];
  const ack: number[] = [];
  for (let i = 0; i < TASKS; i++) {
    await timed(add, () => broker.call("worker.queue.add", { serviceId, value: { ...value, n: i } }, opts));
  }
  for (let i = 0; i < TASKS; i++) {
    const workerId = `w-${i % 50}`;
    const v = await timed(fetchNew, () => broker.call("worker.queue.fetch", { serviceId, workerId }, opts));
    if (v === null) throw new Error("queue ran empty too early");
    await timed(fetchAgain, () => broker.call("worker.queue.fetch", { serviceId, workerId }, opts));
    await timed(ack, () => broker.call("worker.queue.ack", { serviceId, workerId, result: { ok: i } }, opts));
  }
  for (let i = 0; i < TASKS; i++) {
    await timed(fetchEmpty, () => broker.call("worker.queue.fetch", { serviceId, workerId: "idle" }, opts));
  }
  if (!print) return;
  report("add", add);
  report("fetch (new task)", fetchNew);
  report("fetch (repeated)", fetchAgain);
  report("fetch (empty queue)", fetchEmpty);
  report("ack", ack);
}

/** Producers and workers run together for SECONDS on `queues` queues; counts tasks fetched and acked. */
async function throughput(broker: ServiceBroker, workers: number, queues = 1): Promise<void> {
  const serviceIds = Array.from({ length: queues }, () => randomUUID());
  const until = Date.now() + SECONDS * 1000;
  let added = 0;
  let done = 0;
  const latency: number[] = [];
  const producers = Array.from({ length: Math.max(1, Math.ceil(workers / 2)) }, async (_, p) => {
    const serviceId = serviceIds[p % queues]!;
    while (Date.now() < until) {
      if (added - done > workers * 20) {
        await new Promise(r => setTimeout(r, 1));
        continue;
      }
      await broker.call("worker.queue.add", { serviceId, value: { ...value, n: added } }, opts);
      added++;
    }
  });
  const consumers = Array.from({ length: workers }, async (_, w) => {
    const workerId = `tp-${w}`;
    const serviceId = serviceIds[w % queues]!;
    while (Date.now() < until) {
      const t0 = performance.now();
      const v = await broker.call("worker.queue.fetch", { serviceId, workerId }, opts);
      if (v === null) {
        await new Promise(r => setTimeout(r, 1));
        continue;
      }
      await broker.call("worker.queue.ack", { serviceId, workerId, result: true }, opts);
      latency.push(performance.now() - t0);
      done++;
    }
  });
  const t0 = Date.now();
  await Promise.all([...producers, ...consumers]);
  const secs = (Date.now() - t0) / 1000;
  const s = [...latency].sort((a, b) => a - b);
  console.log(
    `${String(workers).padStart(2)} workers on ${queues} queue${queues > 1 ? "s" : ""}: ${(done / secs).toFixed(0).padStart(6)} tasks/s done, ${(added / secs).toFixed(0)} adds/s; fetch+ack p50 ${percentile(s, 50).toFixed(2)} ms p99 ${percentile(s, 99).toFixed(2)} ms`,
  );
}

async function main(): Promise<void> {
  const node = await startBenchNode("queue");
  const { broker } = node;
  try {
    console.log(`warming up…`);
    await latencies(broker, false);
    console.log(
      `\nlatency through broker.call (value ${JSON.stringify(value).length} bytes, encrypted), ${TASKS} tasks:`,
    );
    await latencies(broker, true);
    console.log(`\nend-to-end throughput, ${SECONDS} s each (producers and workers on one queue):`);
    for (const w of [1, 8, 32]) await throughput(broker, w);
    await throughput(broker, 32, 4);
  } finally {
    await node.stop();
  }
}

main().catch(err => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
