/**
 * Worker benchmark: the throughput of one QueueWorker (concurrency 1, 8, 32) on a trivial handler,
 * next to the same number of raw fetchTask + ackTask loops through broker.call; and the same for
 * HttpQueueWorker next to raw fetch + ack loops over HTTP (global fetch, keep-alive). One broker
 * with the keys service (encryption included), the queue and the gateway, on a real Cassandra;
 * producers add through broker.call and keep a backlog, so the consumers never starve.
 *
 *   npm run bench:worker               # starts a local Cassandra unless CASSANDRA_CONTACT_POINTS is set
 *   BENCH_SECONDS=10 npm run bench:worker
 */
import { randomBytes, randomUUID } from "node:crypto";
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { connectCassandra } from "../lib/cassandra/client";
import { ensureCassandra } from "../lib/cassandra/launcher";
import { mintAccessToken } from "../lib/http/access-token";
import { HttpQueueWorker } from "../lib/worker/http-queue-worker";
import type { PullWorker } from "../lib/worker/pull-worker";
import { QueueWorker } from "../lib/worker/queue-worker";
import { createApiService } from "../services/api.service";
import { createKeysService } from "../services/keys.service";
import { createQueueService } from "../services/queue.service";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const OWNER = "bench-owner";
const meta = { ownerId: OWNER };
const value = { payload: randomBytes(384).toString("base64"), n: 0 };

/** Starts consumers on a queue; `done` is called once per acked task. Returns how to stop them. */
type Consumers = (serviceId: string, concurrency: number, done: () => void) => () => Promise<void>;

const idle = () => new Promise(r => setTimeout(r, 1));

/** `concurrency` loops of one fetch + one ack each, polling again after 1 ms when the queue is empty. */
function rawLoops(roundTrip: (serviceId: string, workerId: string) => Promise<boolean>): Consumers {
  return (serviceId, concurrency, done) => {
    let stopped = false;
    const loops = Array.from({ length: concurrency }, async (_, i) => {
      while (!stopped) {
        if (await roundTrip(serviceId, `raw-${i}`)) done();
        else await idle();
      }
    });
    return async () => {
      stopped = true;
      await Promise.all(loops);
    };
  };
}

function brokerRoundTrip(broker: ServiceBroker) {
  return async (serviceId: string, workerId: string): Promise<boolean> => {
    const task = await broker.call<{ taskId: string } | null, object>(
      "worker.queue.fetchTask",
      { serviceId, workerId },
      { meta },
    );
    if (task === null) return false;
    await broker.call("worker.queue.ackTask", { serviceId, workerId, taskId: task.taskId, result: true }, { meta });
    return true;
  };
}

function httpRoundTrip(apiUrl: string, token: string) {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  return async (serviceId: string, workerId: string): Promise<boolean> => {
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

/** A worker with a trivial handler; failures would show as missing throughput, so they are thrown. */
function workerConsumers(create: (serviceId: string, concurrency: number) => PullWorker): Consumers {
  return (serviceId, concurrency, done) => {
    const worker = create(serviceId, concurrency);
    worker.on("completed", done);
    worker.on("failed", (task, err) => console.error(`task ${task.id} failed:`, err));
    worker.on("error", err => console.error(`worker error: ${err.message}`));
    return () => worker.close(5000);
  };
}

/** Producers and consumers on a fresh queue for SECONDS; tasks acked per second. */
async function throughput(broker: ServiceBroker, consumers: Consumers, concurrency: number): Promise<number> {
  const serviceId = randomUUID();
  let added = 0;
  let done = 0;
  const stop = consumers(serviceId, concurrency, () => done++);
  const t0 = Date.now();
  const until = t0 + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.ceil(concurrency / 2)) }, async () => {
      while (Date.now() < until) {
        if (added - done > concurrency * 20) {
          await idle();
          continue;
        }
        added++;
        await broker.call("worker.queue.add", { serviceId, value: { ...value, n: added } }, { meta });
      }
    }),
  );
  const rate = done / ((Date.now() - t0) / 1000);
  await stop();
  await broker.call("worker.queue.purge", { serviceId }, { meta });
  return rate;
}

async function main(): Promise<void> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  const client = await connectCassandra({
    contactPoints: cassandra.contactPoints,
    localDataCenter: cassandra.localDataCenter,
  });
  const keyspace = `bench_worker_${randomBytes(4).toString("hex")}`;
  const secret = randomBytes(32).toString("base64");
  const broker = new ServiceBroker({ nodeID: "bench-worker", logger: false });
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
    const baseUrl = `http://127.0.0.1:${port}`;
    const token = await mintAccessToken({ secret, ownerId: OWNER, services: "*" });
    const modes: [string, Consumers][] = [
      ["broker.call fetch+ack loops", rawLoops(brokerRoundTrip(broker))],
      [
        "QueueWorker",
        workerConsumers(
          (serviceId, concurrency) =>
            new QueueWorker(broker, { serviceId, concurrency, meta, wait: 1, timeToRecover: 30 }, () => true),
        ),
      ],
      ["HTTP fetch+ack loops", rawLoops(httpRoundTrip(`${baseUrl}/api`, token))],
      [
        "HttpQueueWorker",
        workerConsumers(
          (serviceId, concurrency) =>
            new HttpQueueWorker({ baseUrl, token, serviceId, concurrency, wait: 1, timeToRecover: 30 }, () => true),
        ),
      ],
    ];
    console.log(
      `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
        `load ${os.loadavg()[0]!.toFixed(2)}; node ${process.version}; Cassandra at ${cassandra.contactPoints.join(",")}`,
    );
    console.log("warming up…");
    for (const [, consumers] of modes) await throughput(broker, consumers, 8);
    console.log(
      `\nthroughput in tasks/s, ${SECONDS} s each (value ${JSON.stringify(value).length} bytes, encrypted; trivial handler):`,
    );
    for (const concurrency of [1, 8, 32]) {
      for (const [name, consumers] of modes) {
        const rate = await throughput(broker, consumers, concurrency);
        console.log(
          `  concurrency ${String(concurrency).padStart(2)}  ${name.padEnd(28)} ${rate.toFixed(0).padStart(6)}`,
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
