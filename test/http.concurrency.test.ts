/**
 * Twenty external workers on one queue over HTTP, with producers adding over HTTP at the same time:
 * every task is delivered and acked once, none is held by two workers while leased (G1, G2 through
 * the gateway). A second run has some workers drop tasks, so redeliveries after expiry happen too.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { HttpQueueClient, HttpQueueWorker } from "../lib/worker/http-queue-worker";
import type { PullWorker } from "../lib/worker/pull-worker";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { History } from "./helpers/history";
import { apiPort, newJwtSecret, request, tokenFor } from "./helpers/http-api";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

let client: Client;
let broker: ServiceBroker;
let base: string;
/** The gateway's origin, for HttpQueueWorker (`base` is its /api prefix). */
let origin: string;
const keyspace = uniqueKeyspace("http_concurrency");
const secret = newJwtSecret();

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("http-concurrency", {
    keyspace,
    client,
    services: [createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } })],
  });
  origin = `http://127.0.0.1:${apiPort(broker)}`;
  base = `${origin}/api`;
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

/** Adds `count` tasks over HTTP from `producers` concurrent clients; records each add. */
async function produce(serviceId: string, token: string, count: number, producers: number, history: History) {
  let next = 0;
  await Promise.all(
    Array.from({ length: producers }, async () => {
      while (next < count) {
        const taskId = `t-${next++}`;
        const answer = await request(`${base}/queue/${serviceId}/add`, { token, body: { value: { taskId }, taskId } });
        if (answer.status !== 200) throw new Error(`add ${taskId}: ${answer.status} ${answer.text}`);
        history.add(taskId);
      }
    }),
  );
}

test("20 HTTP workers, 600 tasks: each delivered and acked exactly once, never to two workers", async () => {
  const serviceId = randomUUID();
  const token = await tokenFor(secret, "owner-c", [serviceId]);
  const tasks = 600;
  const timeToRecover = 30;
  const history = new History();
  const perWorker = new Map<string, number>();
  let failures = 0;
  let acked = 0;

  const workers: PullWorker[] = Array.from({ length: 20 }, (_, i) => {
    const workerId = `http-w${i}`;
    const worker = new HttpQueueWorker(
      { baseUrl: origin, token, serviceId, workerId, timeToRecover, wait: 1 },
      (value: { taskId: string }) => ({ done: value.taskId }),
    );
    worker.on("active", task =>
      history.deliver({
        worker: workerId,
        taskId: task.id,
        attempt: task.attempt,
        leaseUntil: task.leaseUntil,
        timeToRecoverMs: timeToRecover * 1000,
        at: Date.now(),
      }),
    );
    worker.on("completed", task => {
      history.ack(task.id, workerId);
      perWorker.set(workerId, (perWorker.get(workerId) ?? 0) + 1);
      acked++;
    });
    worker.on("failed", () => failures++);
    return worker;
  });

  await produce(serviceId, token, tasks, 8, history);
  await waitFor(() => acked >= tasks, 60_000).finally(() => Promise.all(workers.map(w => w.close())));

  const verdict = history.verdict();
  expect(verdict).toMatchObject({
    tasks,
    deliveredOnce: tasks,
    redeliveredAfterExpiry: 0,
    lost: [],
    duplicatedWhileLeased: [],
    deliveredAfterAck: [],
    completedTwice: [],
  });
  expect(acked).toBe(tasks);
  expect(failures).toBe(0);
  // Pull-based dispatch spreads the work: most workers got some of it.
  expect(perWorker.size).toBeGreaterThanOrEqual(10);
  const empty = await request(`${base}/queue/${serviceId}/fetch`, { token, body: { workerId: "checker" } });
  expect(empty.status).toBe(204);
}, 120_000);

test("with workers that drop tasks, every task is still acked once and never held by two at a time", async () => {
  const serviceId = randomUUID();
  const token = await tokenFor(secret, "owner-c", [serviceId]);
  const tasks = 200;
  const timeToRecover = 1;
  const history = new History();
  let acked = 0;
  let dropped = 0;
  let stopped = false;

  const record = (workerId: string, task: { taskId: string; attempt: number; leaseUntil: number }) =>
    history.deliver({ worker: workerId, ...task, timeToRecoverMs: timeToRecover * 1000, at: Date.now() });
  const honest: PullWorker[] = Array.from({ length: 16 }, (_, i) => {
    const workerId = `honest-${i}`;
    const worker = new HttpQueueWorker(
      { baseUrl: origin, token, serviceId, workerId, timeToRecover, wait: 1 },
      () => true,
    );
    worker.on("active", task =>
      record(workerId, { taskId: task.id, attempt: task.attempt, leaseUntil: task.leaseUntil }),
    );
    worker.on("completed", task => {
      history.ack(task.id, workerId);
      acked++;
    });
    return worker;
  });
  // A dropping worker takes a task and vanishes; it comes back under a new id, as a restarted process would.
  const dropper = new HttpQueueClient({ baseUrl: origin, token, serviceId });
  const droppers = Array.from({ length: 4 }, async (_, i) => {
    for (let round = 0; !stopped && round < 10; round++) {
      const workerId = `dropper-${i}-${round}`;
      // A long poll, like the honest workers: it waits in line with them for the next task.
      const task = await dropper.fetch(workerId, timeToRecover, 1).catch(() => null);
      if (task) {
        record(workerId, task);
        dropped++;
      }
      await new Promise(r => setTimeout(r, 50));
    }
  });

  await produce(serviceId, token, tasks, 4, history);
  await waitFor(() => acked >= tasks, 60_000).finally(() => {
    stopped = true;
    return Promise.all(honest.map(w => w.close()));
  });
  await Promise.all(droppers);

  const verdict = history.verdict();
  expect(verdict).toMatchObject({
    tasks,
    lost: [],
    duplicatedWhileLeased: [],
    deliveredAfterAck: [],
    completedTwice: [],
  });
  expect(dropped).toBeGreaterThan(0);
  expect(verdict.redeliveredAfterExpiry).toBeGreaterThan(0);
  expect(verdict.deliveredOnce + verdict.redeliveredAfterExpiry).toBe(tasks);
}, 120_000);
