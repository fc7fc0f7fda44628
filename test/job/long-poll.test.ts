/** Long polling: a waiting fetch returns as soon as a task is added on any node, and costs no queries while it waits. */
import { randomUUID } from "node:crypto";
import { queueFixture, sleep } from "../helpers/queue-fixture";

// Renewals far apart, so that none falls inside a measured wait.
const f = queueFixture("job_longpoll", { nodes: 2, engine: { ownerLeaseMs: 90_000 } });

test("a long-polling fetch returns the task added on another broker while it waits", async () => {
  const serviceId = randomUUID();
  const [a, b] = f.brokers as [any, any];
  // Make the queue live (owned) before waiting.
  await a.call("worker.queue.stats", { serviceId }, { meta: { ownerId: "owner-1" } });
  let answered = false;
  const waiting = a
    .call(
      "worker.queue.fetchTask",
      { serviceId, workerId: "w", wait: 20 },
      { meta: { ownerId: "owner-1" }, timeout: 40_000 },
    )
    .finally(() => (answered = true));
  await sleep(300);
  expect(answered).toBe(false);
  await b.call("worker.queue.add", { serviceId, value: "wake up" }, { meta: { ownerId: "owner-1" } });
  // Woken by the add's commit on the owner (how fast is a benchmark's business, not this test's).
  const task = await waiting;
  expect(task.value).toBe("wake up");
});

test("a waiting fetch costs no Cassandra queries while it waits, and returns null at the end of the wait", async () => {
  const serviceId = randomUUID();
  await f.call("stats", { serviceId });
  const client = f.client as any;
  const counts = { execute: 0, batch: 0 };
  const execute = client.execute.bind(client);
  const batch = client.batch.bind(client);
  // Statements about this queue only: other queues' owners and the node's housekeeping go on.
  const mine = (args: unknown[]) => JSON.stringify(args).includes(serviceId);
  client.execute = (...args: unknown[]) => (mine(args) && counts.execute++, execute(...args));
  client.batch = (...args: unknown[]) => (mine(args) && counts.batch++, batch(...args));
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
