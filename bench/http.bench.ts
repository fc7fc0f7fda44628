/**
 * HTTP API benchmark: the fetch + ack round trip of an external worker through the gateway
 * (global fetch, keep-alive), next to the same two calls through broker.call, on one broker with the
 * keys service (encryption included), the queue and the gateway, against a real Cassandra.
 * Prints p50 / p99 of one fetch+ack, then throughput with 1, 8 and 32 concurrent workers.
 *
 *   npm run bench:http                 # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 *   BENCH_TASKS=2000 BENCH_SECONDS=10 npm run bench:http
 */
import { randomBytes, randomUUID } from "node:crypto";
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { connectCassandra } from "../lib/cassandra/client";
import { ensureCassandra } from "../lib/cassandra/launcher";
import { mintAccessToken } from "../lib/http/access-token";
import { createApiService } from "../services/api.service";
import { createKeysService } from "../services/keys.service";
import { createQueueService } from "../services/queue.service";

const TASKS = Number(process.env.BENCH_TASKS ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const OWNER = "bench-owner";
const opts = { meta: { ownerId: OWNER } };
const value = { payload: randomBytes(384).toString("base64"), n: 0 };

/** One worker's fetch + ack, either over HTTP or through the broker; false when the queue was empty. */
type RoundTrip = (serviceId: string, workerId: string) => Promise<boolean>;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function summary(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(2)} ms  p99 ${percentile(s, 99).toFixed(2)} ms`;
}

function httpRoundTrip(apiUrl: string, token: string): RoundTrip {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  return async (serviceId, workerId) => {
    const fetched = await fetch(`${apiUrl}/queue/${serviceId}/fetch`, {
      method: "POST",
      headers,
      body: JSON.stringify({ workerId }),
    });
    if (fetched.status === 204) return false;
    if (fetched.status !== 200) throw new Error(`fetch answered ${fetched.status}: ${await fetched.text()}`);
    await fetched.json();
    const taskId = decodeURIComponent(fetched.headers.get("x-task-id") ?? "");
    const acked = await fetch(`${apiUrl}/queue/${serviceId}/ack`, {
      method: "POST",
      headers,
      body: JSON.stringify({ workerId, taskId, result: true }),
    });
    if (acked.status !== 200) throw new Error(`ack answered ${acked.status}: ${await acked.text()}`);
    await acked.arrayBuffer();
    return true;
  };
}

function brokerRoundTrip(broker: ServiceBroker): RoundTrip {
  return async (serviceId, workerId) => {
    const task = await broker.call<{ taskId: string } | null, object>(
      "worker.queue.fetchTask",
      { serviceId, workerId },
      opts,
    );
    if (task === null) return false;
    const outcome = await broker.call<{ ok: boolean }, object>(
      "worker.queue.ackTask",
      { serviceId, workerId, taskId: task.taskId, result: true },
      opts,
    );
    if (!outcome.ok) throw new Error(`ack refused: ${JSON.stringify(outcome)}`);
    return true;
  };
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
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  const client = await connectCassandra({
    contactPoints: cassandra.contactPoints,
    localDataCenter: cassandra.localDataCenter,
  });
  const keyspace = `bench_http_${randomBytes(4).toString("hex")}`;
  const secret = randomBytes(32).toString("base64");
  const broker = new ServiceBroker({ nodeID: "bench-http", logger: false });
  broker.createService(
    createKeysService({
      client,
      keyspace,
      replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
      masterKey: randomBytes(32).toString("base64"),
    }) as never,
  );
  broker.createService(createQueueService({ client, engine: { keyspace } }));
  broker.createService(createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } }));
  try {
    await broker.start();
    const port = (broker.getLocalService("api")?.settings as { port: number }).port;
    const apiUrl = `http://127.0.0.1:${port}/api`;
    const token = await mintAccessToken({ secret, ownerId: OWNER, services: "*" });
    const modes: [string, RoundTrip][] = [
      ["HTTP (fetch, keep-alive)", httpRoundTrip(apiUrl, token)],
      ["broker.call", brokerRoundTrip(broker)],
    ];
    console.log(
      `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
        `load ${os.loadavg()[0]!.toFixed(2)}; node ${process.version}; Cassandra at ${cassandra.contactPoints.join(",")}`,
    );
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
    await broker.stop();
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
    await client.shutdown();
    await cassandra.stop();
  }
}

main().catch(err => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
