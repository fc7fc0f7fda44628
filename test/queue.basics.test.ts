/** The original service's behaviours, on a real Cassandra. */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { owner, startQueueBroker } from "./helpers/queue-cluster";

let client: Client;
let broker: ServiceBroker;
const keyspace = uniqueKeyspace("queue_basics");
const opts = owner("owner-a");

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("basics", { keyspace, client });
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

test("add returns true and fetch gives the same task until it is acked", async () => {
  const serviceId = randomUUID();
  expect(await broker.call("worker.queue.add", { serviceId, value: { msg: "one" } }, opts)).toBe(true);
  expect(await broker.call("worker.queue.add", { serviceId, value: { msg: "two" } }, opts)).toBe(true);
  const first = await broker.call("worker.queue.fetch", { serviceId, workerId: "w1" }, opts);
  expect(first).toEqual({ msg: "one" });
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w1" }, opts)).toEqual({ msg: "one" });
  expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w1", result: "done" }, opts)).toBe(true);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w1" }, opts)).toEqual({ msg: "two" });
});

test("a second worker gets a different task; an empty queue gives null", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: 1 }, opts);
  await broker.call("worker.queue.add", { serviceId, value: 2 }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "a" }, opts)).toBe(1);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "b" }, opts)).toBe(2);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "c" }, opts)).toBeNull();
});

test("after timeToRecover the task goes to the next worker, and the late ack is refused", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: "slow" }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w1", timeToRecover: 0.3 }, opts)).toBe("slow");
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w2" }, opts)).toBeNull();
  await new Promise(r => setTimeout(r, 400));
  const task = await broker.call<any, any>("worker.queue.fetchTask", { serviceId, workerId: "w2" }, opts);
  expect(task.value).toBe("slow");
  expect(task.attempt).toBe(2);
  expect(await broker.call("worker.queue.ackTask", { serviceId, workerId: "w1" }, opts)).toEqual({
    ok: false,
    reason: "LEASE_LOST",
    taskId: task.taskId,
  });
  expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w2" }, opts)).toBe(true);
});

test("ackTask with next acks and answers the worker's next task in the same call", async () => {
  const serviceId = randomUUID();
  for (const n of [1, 2]) await broker.call("worker.queue.add", { serviceId, value: { n }, taskId: `t${n}` }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toEqual({ n: 1 });
  const r = await broker.call<any, any>(
    "worker.queue.ackTask",
    { serviceId, workerId: "w", taskId: "t1", next: true },
    opts,
  );
  expect(r).toMatchObject({ ok: true, taskId: "t1", next: { taskId: "t2", attempt: 1, value: { n: 2 } } });
  // The worker holds t2: fetch gives it again, another worker gets nothing.
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toEqual({ n: 2 });
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "other" }, opts)).toBeNull();
  // A refused ack still fetches (the worker holds nothing either way); an empty queue gives null.
  expect(
    await broker.call("worker.queue.ackTask", { serviceId, workerId: "idle", taskId: "t9", next: true }, opts),
  ).toEqual({ ok: false, reason: "NO_TASK", next: null });
  // Bad input is refused naming the field, and loses nothing. Without the task id a retry could ack
  // the task the first attempt took next, so next needs it.
  await expect(
    broker.call("worker.queue.ackTask", { serviceId, workerId: "w", next: true }, opts),
  ).rejects.toMatchObject({ type: "INVALID_PARAMETER", data: { field: "taskId" } });
  await expect(
    broker.call("worker.queue.ackTask", { serviceId, workerId: "w", taskId: "t2", next: "maybe" }, opts),
  ).rejects.toMatchObject({ type: "VALIDATION_ERROR", data: [expect.objectContaining({ field: "next" })] });
  expect(
    await broker.call("worker.queue.ackTask", { serviceId, workerId: "w", taskId: "t2", next: true }, opts),
  ).toEqual({ ok: true, taskId: "t2", next: null });
});

test("ack without a task returns false", async () => {
  const serviceId = randomUUID();
  expect(await broker.call("worker.queue.ack", { serviceId, workerId: "nobody" }, opts)).toBe(false);
});

test("fetchTask tells the task id, attempt and lease deadline without changing fetch", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: { a: 1 }, taskId: "my-task-1" }, opts);
  const before = Date.now();
  const task = await broker.call<any, any>(
    "worker.queue.fetchTask",
    { serviceId, workerId: "w", timeToRecover: 30 },
    opts,
  );
  expect(task).toMatchObject({ taskId: "my-task-1", attempt: 1, value: { a: 1 } });
  expect(task.leaseUntil).toBeGreaterThanOrEqual(before + 29_000);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toEqual({ a: 1 });
});

test("a retried add with the same task id does not enqueue twice, also after the task was acked", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: "x", taskId: "t-1" }, opts);
  await broker.call("worker.queue.add", { serviceId, value: "x", taskId: "t-1" }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBe("x");
  expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w" }, opts)).toBe(true);
  await broker.call("worker.queue.add", { serviceId, value: "x", taskId: "t-1" }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBeNull();
});

test("owners never see each other's tasks, even with the same serviceId", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: "secret of a" }, owner("a"));
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("b"))).toBeNull();
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("a"))).toBe("secret of a");
});
