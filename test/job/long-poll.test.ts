/** Long polling: a waiting fetch returns as soon as a task is added on any node, and costs no queries while it waits. */
import { randomUUID } from "node:crypto";
import { queueFixture, sleep } from "../helpers/queue-fixture";

const f = queueFixture("job_longpoll", { nodes: 2 });

test("a long-polling fetch returns within 50 ms of an add on another broker", async () => {
  const serviceId = randomUUID();
  const [a, b] = f.brokers as [any, any];
  // Make the queue live (owned) before measuring.
  await a.call("worker.queue.stats", { serviceId }, { meta: { ownerId: "owner-1" } });
  const started = Date.now();
  const waiting = a.call(
    "worker.queue.fetchTask",
    { serviceId, workerId: "w", wait: 5 },
    { meta: { ownerId: "owner-1" } },
  );
  await sleep(300);
  await b.call("worker.queue.add", { serviceId, value: "wake up" }, { meta: { ownerId: "owner-1" } });
  const addedAt = Date.now();
  const task = await waiting;
  const returnedAt = Date.now();
  expect(task.value).toBe("wake up");
  expect(returnedAt - started).toBeGreaterThanOrEqual(300);
  // Woken by the add's commit on the owner, not by polling.
  expect(returnedAt - addedAt).toBeLessThan(50);
});

test("a waiting fetch costs no Cassandra queries while it waits, and returns null at the end of the wait", async () => {
  const serviceId = randomUUID();
  await f.call("stats", { serviceId });
  const client = f.client as any;
  const counts = { execute: 0, batch: 0 };
  const execute = client.execute.bind(client);
  const batch = client.batch.bind(client);
  client.execute = (...args: unknown[]) => (counts.execute++, execute(...args));
  client.batch = (...args: unknown[]) => (counts.batch++, batch(...args));
  try {
    const t0 = Date.now();
    expect(await f.call("fetch", { serviceId, workerId: "w", wait: 1 })).toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(counts).toEqual({ execute: 0, batch: 0 });
  } finally {
    client.execute = execute;
    client.batch = batch;
  }
});

test("wait is limited to 20 seconds", async () => {
  await expect(f.call("fetch", { serviceId: randomUUID(), workerId: "w", wait: 21 })).rejects.toMatchObject({
    type: "VALIDATION_ERROR",
  });
});
