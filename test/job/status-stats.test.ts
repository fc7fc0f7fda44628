/** status tells a task's state and holder; stats match the real state after a mixed workload. */
import { randomUUID } from "node:crypto";
import { queueFixture, sleep } from "../helpers/queue-fixture";

const f = queueFixture("job_status", { engine: { maxAttempts: 1 } });

test("status follows a task from waiting to leased to done", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: 1, taskId: "s1" });
  expect(await f.call("status", { serviceId, taskId: "s1" })).toMatchObject({ state: "waiting", attempt: 0 });
  await f.call("fetch", { serviceId, workerId: "w", timeToRecover: 30 });
  const leased = await f.call("status", { serviceId, taskId: "s1" });
  expect(leased).toMatchObject({ state: "leased", worker: "w", attempt: 1 });
  expect(leased.leaseUntil).toBeGreaterThan(Date.now() + 25_000);
  await f.call("ack", { serviceId, workerId: "w" });
  expect(await f.call("status", { serviceId, taskId: "s1" })).toMatchObject({ state: "done" });
  expect(await f.call("status", { serviceId, taskId: "never" })).toMatchObject({ state: "unknown" });
});

test("stats match the real state after a mixed workload", async () => {
  const serviceId = randomUUID();
  for (let i = 0; i < 10; i++) await f.call("add", { serviceId, value: i });
  await f.call("add", { serviceId, value: "later", delay: 60 });
  for (const w of ["a", "b", "c"]) await f.call("fetch", { serviceId, workerId: w });
  await f.call("ack", { serviceId, workerId: "a" });
  await f.call("release", { serviceId, workerId: "b", error: "no" }); // maxAttempts 1: dead
  await sleep(20);
  const stats = await f.call("stats", { serviceId });
  expect(stats).toMatchObject({ ready: 7, delayed: 1, inFlight: 1, dead: 1, handingOver: 0 });
  expect(stats.workers).toEqual([expect.objectContaining({ workerId: "c" })]);
  expect(stats.oldestWaitingMs).toBeGreaterThan(0);
});

test("health reports Cassandra and the queues this node owns", async () => {
  const serviceId = randomUUID();
  await f.call("stats", { serviceId });
  const health = await f.broker.call<any, object>("worker.queue.health", {});
  expect(health).toMatchObject({ cassandra: true, nodeId: f.broker.nodeID });
  expect(health.ownedQueues).toContain(`owner-1/${serviceId}`);
});

test("queues lists the caller's queues only, with their stats when asked", async () => {
  const mine = [randomUUID(), randomUUID()];
  for (const serviceId of mine) await f.call("add", { serviceId, value: 1 }, "owner-q");
  await f.call("add", { serviceId: randomUUID(), value: 1 }, "owner-other");
  const list = await f.call("queues", {}, "owner-q");
  expect(list.map((q: { serviceId: string }) => q.serviceId).sort()).toEqual([...mine].sort());
  const withStats = await f.call("queues", { withStats: true }, "owner-q");
  expect(withStats.every((q: { stats: { ready: number } }) => q.stats.ready === 1)).toBe(true);
});

test("tasks pages through live tasks by state; inspect shows one with its value and last error", async () => {
  const serviceId = randomUUID();
  for (let i = 0; i < 5; i++) await f.call("add", { serviceId, value: { n: i }, taskId: `l-${i}` });
  await f.call("fetch", { serviceId, workerId: "w" });
  await f.call("release", { serviceId, workerId: "w", error: { message: "tried" } }); // maxAttempts 1: dead
  const waiting = await f.call("tasks", { serviceId, state: "waiting", offset: 1, limit: 2 });
  expect(waiting.total).toBe(4);
  expect(waiting.tasks.map((t: { taskId: string }) => t.taskId)).toEqual(["l-2", "l-3"]);
  const one = await f.call("inspect", { serviceId, taskId: "l-0" });
  expect(one).toMatchObject({ taskId: "l-0", state: "dead", value: { n: 0 }, error: { message: "tried" } });
  const stats = await f.call("stats", { serviceId });
  expect(stats.completedPer10s).toHaveLength(30);
});
