/**
 * An external worker on the queue's HTTP API, a few lines on top of the package's HttpQueueWorker:
 * it long-polls for tasks, runs the handler with heartbeats, acks the result (a throw gives the
 * task back for another attempt), backs off while the gateway is unreachable, stops with one clear
 * error on a refused token, and on Ctrl-C finishes the tasks in hand before it stops.
 *
 *   API_URL=http://localhost:3000/api API_TOKEN=<jwt> SERVICE_ID=<uuid> npx tsx examples/http-worker.ts
 *
 * Optional: WORKER_ID, CONCURRENCY (default 1), TIME_TO_RECOVER (lease seconds, default 60).
 */
// In your project: from "moleculer-cassandra-queue", or "moleculer-cassandra-queue/http-worker" (loads no Moleculer).
import { HttpQueueWorker } from "../lib/worker/http-queue-worker";

const { API_URL = "http://localhost:3000/api", API_TOKEN, SERVICE_ID } = process.env;
if (!API_TOKEN || !SERVICE_ID) {
  console.error("Set API_TOKEN and SERVICE_ID (and API_URL), then run again.");
  process.exit(2);
}

const worker = new HttpQueueWorker(
  {
    baseUrl: API_URL,
    basePath: "", // API_URL already ends with the gateway's /api
    token: API_TOKEN,
    serviceId: SERVICE_ID,
    workerId: process.env.WORKER_ID || undefined,
    concurrency: Number(process.env.CONCURRENCY ?? 1),
    timeToRecover: Number(process.env.TIME_TO_RECOVER ?? 60),
  },
  // The work: here, echo the value back as the result.
  async (value, task) => {
    console.log(`task ${task.id} (attempt ${task.attempt}): ${JSON.stringify(value).slice(0, 120)}`);
    return { echoed: value, by: task.workerId };
  },
);
worker.on("failed", (task, err) => console.log(`task ${task.id} failed: ${(err as Error).message}`));
worker.on("error", err => console.error(err.message));
console.log(`worker ${worker.workerId} pulling from ${API_URL} (queue ${SERVICE_ID}); Ctrl-C stops`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.log(`\n${signal}: finishing the tasks in hand, then stopping (Ctrl-C again quits at once)`);
    process.once("SIGINT", () => process.exit(130));
    void worker.close().then(() => process.exit(0));
  });
}
// A refused token stops the worker (the error above says what to do).
void worker.run().then(() => worker.stoppedBy && process.exit(1));
