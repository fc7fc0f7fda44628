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
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { HttpQueueWorker } from "../lib/worker/http-queue-worker";
import type { PullWorker } from "../lib/worker/pull-worker";
import { QueueWorker } from "../lib/worker/queue-worker";
import { brokerRoundTrip, httpRoundTrip, meta, startBenchNode, value, type RoundTrip } from "./harness";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

/** Starts consumers on a queue; `done` is called once per acked task. Returns how to stop them. */
type Consumers = (serviceId: string, concurrency: number, done: () => void) => () => Promise<void>;

const idle = () => new Promise(r => setTimeout(r, 1));

/** `concurrency` loops of one fetch + one ack each, polling again after 1 ms when the queue is empty. */
function rawLoops(roundTrip: RoundTrip): Consumers {
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
  const node = await startBenchNode("worker", true);
  const { broker } = node;
  const { baseUrl, token } = node.api!;
  try {
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
    await node.stop();
  }
}

main().catch(err => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
