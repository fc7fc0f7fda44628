/**
 * HTTP API benchmark: the fetch + ack round trip of an external worker through the gateway
 * (global fetch, keep-alive), next to the same two calls through broker.call, on one broker with the
 * keys service (encryption included), the queue and the gateway, against a real Cassandra.
 * Prints p50 / p99 of one fetch+ack, then throughput with 1, 8 and 32 concurrent workers.
 *
 *   npm run bench:http                 # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 *   BENCH_TASKS=2000 BENCH_SECONDS=10 npm run bench:http
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { brokerRoundTrip, httpRoundTrip, meta, percentile, startBenchNode, value, type RoundTrip } from "./harness";

const TASKS = Number(process.env.BENCH_TASKS ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const opts = { meta };

function summary(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(2)} ms  p99 ${percentile(s, 99).toFixed(2)} ms`;
}

/** Sequential round trips over a pre-filled queue: the latency of one fetch + ack. */
async function latency(broker: ServiceBroker, roundTrip: RoundTrip): Promise<number[]> {
  const serviceId = randomUUID();
  for (let i = 0; i < TASKS; i++) {
    await broker.call("worker.queue.add", { serviceId, value: { ...value, n: i } }, opts);
  }
  const samples: number[] = [];
  for (let i = 0; i < TASKS; i++) {
    const t0 = performance.now();
    if (!(await roundTrip(serviceId, `lat-${i % 20}`))) throw new Error("the queue ran empty too early");
    samples.push(performance.now() - t0);
  }
  return samples;
}

/** Producers (broker.call) and `workers` round-tripping workers run together for SECONDS. */
async function throughput(
  broker: ServiceBroker,
  roundTrip: RoundTrip,
  workers: number,
): Promise<{ rate: number; samples: number[] }> {
  const serviceId = randomUUID();
  const until = Date.now() + SECONDS * 1000;
  let added = 0;
  let done = 0;
  const samples: number[] = [];
  const producers = Array.from({ length: Math.max(1, Math.ceil(workers / 2)) }, async () => {
    while (Date.now() < until) {
      if (added - done > workers * 20) {
        await new Promise(r => setTimeout(r, 1));
        continue;
      }
      added++;
      await broker.call("worker.queue.add", { serviceId, value: { ...value, n: added } }, opts);
    }
  });
  const consumers = Array.from({ length: workers }, async (_, w) => {
    while (Date.now() < until) {
      const t0 = performance.now();
      if (!(await roundTrip(serviceId, `tp-${w}`))) {
        await new Promise(r => setTimeout(r, 1));
        continue;
      }
      samples.push(performance.now() - t0);
      done++;
    }
  });
  const t0 = Date.now();
  await Promise.all([...producers, ...consumers]);
  return { rate: done / ((Date.now() - t0) / 1000), samples };
}

async function main(): Promise<void> {
  const node = await startBenchNode("http", true);
  const { broker } = node;
  try {
    const modes: [string, RoundTrip][] = [
      ["HTTP (fetch, keep-alive)", httpRoundTrip(`${node.api!.baseUrl}/api`, node.api!.token)],
      ["broker.call", brokerRoundTrip(broker)],
    ];
    console.log("warming up…");
    for (const [, roundTrip] of modes) await latency(broker, roundTrip);

    console.log(
      `\nfetch + ack round trip, one worker, ${TASKS} tasks (value ${JSON.stringify(value).length} bytes, encrypted):`,
    );
    for (const [name, roundTrip] of modes) {
      console.log(`  ${name.padEnd(26)} ${summary(await latency(broker, roundTrip))}`);
    }
    console.log(`\nthroughput, ${SECONDS} s each (producers via broker.call, workers on one queue):`);
    for (const workers of [1, 8, 32]) {
      for (const [name, roundTrip] of modes) {
        const { rate, samples } = await throughput(broker, roundTrip, workers);
        console.log(
          `  ${String(workers).padStart(2)} workers, ${name.padEnd(26)} ${rate.toFixed(0).padStart(6)} tasks/s; fetch+ack ${summary(samples)}`,
        );
      }
    }
  } finally {
    await node.stop();
  }
}

main().catch(err => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
