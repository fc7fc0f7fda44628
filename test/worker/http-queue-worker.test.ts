/**
 * HttpQueueWorker over a real socket: the gateway runs on its own broker next to the queue's
 * broker (Fake transporter), against the test Cassandra. The happy path (results, retries,
 * heartbeats), a refused token (one clear error, no retry storm), and the gateway restarting on
 * the same port mid-run (the worker recovers; nothing is lost).
 */
import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import type { Client } from "cassandra-driver";
import { ServiceBroker } from "moleculer";
import { HttpQueueClient, HttpQueueWorker } from "../../lib/worker/http-queue-worker";
import type { PullWorker } from "../../lib/worker/pull-worker";
import { WorkerStoppedError } from "../../lib/worker/worker-errors";
import { createApiService } from "../../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "../helpers/cassandra";
import { History, recordWorker } from "../helpers/history";
import { apiPort, newJwtSecret, tokenFor } from "../helpers/http-api";
import { startQueueBroker, waitFor } from "../helpers/queue-cluster";
import { sleep } from "../helpers/queue-fixture";

const OWNER = "owner-http-worker";
const keyspace = uniqueKeyspace("http_worker");
const namespace = `hw-${randomUUID().slice(0, 8)}`;
const secret = newJwtSecret();
let client: Client;
let queueBroker: ServiceBroker;
let gateway: ServiceBroker;
let port = 0;
let baseUrl: string;
let gatewayGeneration = 0;

/** A broker with only the HTTP gateway, in the queue broker's namespace; `port` 0 picks a free one. */
async function startGateway(listenOn: number): Promise<ServiceBroker> {
  const broker = new ServiceBroker({
    nodeID: `gateway-${++gatewayGeneration}`,
    namespace,
    transporter: "Fake",
    logger: false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
  });
  broker.createService(createApiService({ port: listenOn, ip: "127.0.0.1", jwt: { secret } }));
  await broker.start();
  await broker.waitForServices("worker.queue", 10_000);
  return broker;
}

/**
 * Stops the gateway as a crash or a redeploy would: in-flight requests and keep-alive connections
 * are cut. (A graceful broker.stop() alone waits for keep-alive connections to go idle, which
 * never happens while workers keep sending requests on them.)
 */
async function stopGatewayAbruptly(): Promise<void> {
  const server = (gateway.getLocalService("api") as unknown as { server: Server }).server;
  server.close();
  server.closeAllConnections();
  await gateway.stop();
}

beforeAll(async () => {
  client = await testClient();
  queueBroker = await startQueueBroker("http-worker-queue", { keyspace, client, namespace });
  gateway = await startGateway(0);
  port = apiPort(gateway);
  baseUrl = `http://127.0.0.1:${port}`;
});

const running: PullWorker[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map(w => w.close(500)));
});

afterAll(async () => {
  await gateway?.stop();
  await queueBroker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

const call = <T = any>(action: string, params: object) =>
  queueBroker.call<T, object>(`worker.queue.${action}`, params, { meta: { ownerId: OWNER } });

test("processes tasks over HTTP: results acked, a failure retried, heartbeats keep a long task", async () => {
  const serviceId = randomUUID();
  const token = await tokenFor(secret, OWNER, [serviceId]);
  const producer = new HttpQueueClient({ baseUrl, token, serviceId });
  const history = new History();
  for (let n = 0; n < 20; n++) {
    await producer.add({ n, flaky: n === 3, slow: n === 5 }, { taskId: `t-${n}` });
    history.add(`t-${n}`);
  }
  const timeToRecover = 1;
  const results = new Map<string, unknown>();
  const failed: { id: string; attempt: number; message: string }[] = [];
  const worker = new HttpQueueWorker(
    { baseUrl, token, serviceId, concurrency: 3, wait: 1, timeToRecover },
    async (value: { n: number; flaky: boolean; slow: boolean }, task) => {
      if (value.flaky && task.attempt === 1) throw new Error("first try fails");
      await task.progress({ started: value.n });
      // Two and a half leases long: only heartbeats keep it from going to an idle slot.
      if (value.slow) await sleep(timeToRecover * 2500);
      return { doubled: value.n * 2 };
    },
  );
  running.push(worker);
  recordWorker(worker, history, timeToRecover);
  worker.on("completed", (task, result) => results.set(task.id, result));
  worker.on("failed", (task, err) =>
    failed.push({ id: task.id, attempt: task.attempt, message: (err as Error).message }),
  );

  await waitFor(() => results.size === 20, 30_000);
  expect(results.get("t-7")).toEqual({ doubled: 14 });
  expect(failed).toEqual([{ id: "t-3", attempt: 1, message: "first try fails" }]);
  // Every task delivered once, t-3 twice (its first attempt failed): t-5 kept its lease all along.
  expect(history.verdict()).toMatchObject({
    tasks: 20,
    deliveredOnce: 19,
    redeliveredAfterExpiry: 1,
    lost: [],
    duplicatedWhileLeased: [],
    completedTwice: [],
  });
  for (const taskId of ["t-3", "t-5"]) {
    expect(await call("status", { serviceId, taskId })).toMatchObject({ state: "done" });
  }
});

test("each ack brings the next task (ack?next=1): one request per task", async () => {
  const serviceId = randomUUID();
  const token = await tokenFor(secret, OWNER, [serviceId]);
  const producer = new HttpQueueClient({ baseUrl, token, serviceId });
  for (let n = 0; n < 6; n++) await producer.add({ n }, { taskId: `c-${n}` });
  const urls: string[] = [];
  const server = (gateway.getLocalService("api") as unknown as { server: Server }).server;
  // The operation and query of each request to this queue (the gateway may strip its prefix first).
  const seen = (req: { url?: string }) =>
    (req.url ?? "").includes(serviceId) && urls.push((req.url ?? "").split("/").at(-1)!);
  server.on("request", seen);
  try {
    const done: string[] = [];
    const worker = new HttpQueueWorker(
      { baseUrl, token, serviceId, concurrency: 1, wait: 1, timeToRecover: 20 },
      async (value: { n: number }) => value.n,
    );
    running.push(worker);
    worker.on("completed", task => done.push(task.id));
    await waitFor(() => done.length === 6, 20_000);
    expect(done).toEqual([0, 1, 2, 3, 4, 5].map(n => `c-${n}`));
    expect(urls.slice(0, 7)).toEqual(["fetch?wait=1", ...Array<string>(6).fill("ack?next=1")]);
  } finally {
    server.off("request", seen);
  }
  expect(await call("stats", { serviceId })).toMatchObject({ ready: 0, inFlight: 0 });
});

describe("a refused token stops the worker with one clear error, without a retry storm", () => {
  let requests = 0;
  const count = () => requests++;
  beforeEach(() => {
    requests = 0;
    (gateway.getLocalService("api") as unknown as { server: Server }).server.on("request", count);
  });
  afterEach(() => {
    (gateway.getLocalService("api") as unknown as { server: Server }).server.off("request", count);
  });

  test.each([
    ["signed with another secret", 401, "INVALID_TOKEN", () => tokenFor(newJwtSecret(), OWNER, "*")],
    ["for another queue", 403, "SERVICE_NOT_ALLOWED", () => tokenFor(secret, OWNER, [randomUUID()])],
  ])("a token %s: %d %s", async (_what, status, type, mint) => {
    const serviceId = randomUUID();
    await call("add", { serviceId, value: "never run" });
    const errors: Error[] = [];
    let handled = 0;
    const worker = new HttpQueueWorker(
      { baseUrl, token: await mint(), serviceId, concurrency: 4, wait: 1, backoff: { minMs: 10, maxMs: 50 } },
      () => handled++,
    );
    running.push(worker);
    worker.on("error", err => errors.push(err));
    await worker.run();

    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(WorkerStoppedError);
    expect(errors[0]).toMatchObject({ code: status, type });
    expect(errors[0]!.message).toMatch(/token/);
    expect(errors[0]!.message).toMatch(/The worker stopped/);
    expect(worker.stoppedBy).toBe(errors[0]);
    expect(worker.isRunning).toBe(false);
    // One fetch per slot at most, then silence.
    const seen = requests;
    expect(seen).toBeGreaterThanOrEqual(1);
    expect(seen).toBeLessThanOrEqual(4);
    await sleep(1500);
    expect(requests).toBe(seen);
    expect(handled).toBe(0);
  });
});

test("the gateway restarting mid-run: the worker backs off, recovers, and loses nothing", async () => {
  const serviceId = randomUUID();
  const token = await tokenFor(secret, OWNER, [serviceId]);
  const history = new History();
  const tasks = 120;
  for (let n = 0; n < tasks; n++) {
    await call("add", { serviceId, value: { n }, taskId: `t-${n}` });
    history.add(`t-${n}`);
  }
  const timeToRecover = 5;
  let completed = 0;
  const errors: Error[] = [];
  const worker = new HttpQueueWorker(
    { baseUrl, token, serviceId, concurrency: 4, wait: 1, timeToRecover, backoff: { minMs: 100, maxMs: 800 } },
    async () => {
      await sleep(100);
      return "done";
    },
  );
  running.push(worker);
  recordWorker(worker, history, timeToRecover);
  worker.on("completed", () => completed++);
  worker.on("error", err => errors.push(err));

  await waitFor(() => completed >= 20, 30_000);
  await stopGatewayAbruptly();
  const stoppedAt = completed;
  await sleep(1000);
  gateway = await startGateway(port);
  expect(apiPort(gateway)).toBe(port);

  await waitFor(() => history.verdict().lost.length === 0, 60_000);
  expect(stoppedAt).toBeLessThan(tasks);
  expect(errors.length).toBeGreaterThan(0);
  expect(worker.isRunning).toBe(true);
  expect(worker.stoppedBy).toBeUndefined();
  expect(history.verdict()).toMatchObject({
    tasks,
    lost: [],
    duplicatedWhileLeased: [],
    completedTwice: [],
  });
  await waitFor(async () => (await call("stats", { serviceId })).inFlight === 0);
  expect(await call("stats", { serviceId })).toMatchObject({ ready: 0, inFlight: 0 });
}, 120_000);
