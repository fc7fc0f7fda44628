/**
 * Twenty external workers on one queue over HTTP, with producers adding over HTTP at the same time:
 * every task is delivered and acked once, none is held by two workers while leased (G1, G2 through
 * the gateway). A second run has some workers drop tasks, so redeliveries after expiry happen too.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { fetchTask, processTasks, type HttpWorkerOptions } from "../examples/http-worker";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { History } from "./helpers/history";
import { apiPort, newJwtSecret, request, tokenFor } from "./helpers/http-api";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

let client: Client;
let broker: ServiceBroker;
let base: string;
const keyspace = uniqueKeyspace("http_concurrency");
const secret = newJwtSecret();

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("http-concurrency", {
    keyspace,
    client,
    services: [createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } })],
  });
  base = `http://127.0.0.1:${apiPort(broker)}/api`;
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
  const stop = new AbortController();
  let acked = 0;

  const workers = Array.from({ length: 20 }, (_, i) => {
    const workerId = `http-w${i}`;
    const options: HttpWorkerOptions = {
      apiUrl: base,
      token,
      serviceId,
      workerId,
      timeToRecover,
      minIdleMs: 5,
      maxIdleMs: 50,
      signal: stop.signal,
      onDelivered: task =>
        history.deliver({ worker: workerId, ...task, timeToRecoverMs: timeToRecover * 1000, at: Date.now() }),
      onAcked: task => {
        history.ack(task.taskId, workerId);
        perWorker.set(workerId, (perWorker.get(workerId) ?? 0) + 1);
        if (++acked === tasks) stop.abort();
      },
    };
    return processTasks(options, value => ({ done: (value as { taskId: string }).taskId }));
  });

  await produce(serviceId, token, tasks, 8, history);
  await waitFor(() => acked >= tasks, 60_000).finally(() => stop.abort());
  const summaries = await Promise.all(workers);

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
  expect(summaries.reduce((n, s) => n + s.processed, 0)).toBe(tasks);
  expect(summaries.every(s => s.failed === 0 && s.leaseLost === 0)).toBe(true);
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
  const stop = new AbortController();
  let acked = 0;
  let dropped = 0;

  const base0 = { apiUrl: base, token, serviceId, timeToRecover, signal: stop.signal };
  const record = (workerId: string) => ({
    onDelivered: (task: { taskId: string; attempt: number; leaseUntil: number }) =>
      history.deliver({ worker: workerId, ...task, timeToRecoverMs: timeToRecover * 1000, at: Date.now() }),
  });
  const honest = Array.from({ length: 16 }, (_, i) => {
    const workerId = `honest-${i}`;
    return processTasks(
      {
        ...base0,
        workerId,
        minIdleMs: 5,
        maxIdleMs: 50,
        ...record(workerId),
        onAcked: task => {
          history.ack(task.taskId, workerId);
          if (++acked === tasks) stop.abort();
        },
      },
      () => true,
    );
  });
  // A dropping worker takes a task and vanishes; it comes back under a new id, as a restarted process would.
  const droppers = Array.from({ length: 4 }, async (_, i) => {
    for (let round = 0; !stop.signal.aborted && round < 10; round++) {
      const workerId = `dropper-${i}-${round}`;
      const task = await fetchTask({ ...base0, workerId }).catch(() => null);
      if (task) {
        record(workerId).onDelivered(task);
        dropped++;
      }
      await new Promise(r => setTimeout(r, 50));
    }
  });

  await produce(serviceId, token, tasks, 4, history);
  await waitFor(() => acked >= tasks, 60_000).finally(() => stop.abort());
  await Promise.all([...honest, ...droppers]);

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
