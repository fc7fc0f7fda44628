/** Graceful shutdown: a stopping node hands its queues over at once instead of letting others wait out its lease. */
import { randomUUID } from "node:crypto";
import { queueFixture } from "../helpers/queue-fixture";

// An owner lease of a minute: without the hand-over, the second node would wait that long.
const f = queueFixture("job_shutdown", { nodes: 2, engine: { ownerLeaseMs: 60_000 } });

test("the other node serves the queue right after the owner stops", async () => {
  const serviceId = randomUUID();
  const [first, second] = f.brokers as [(typeof f.brokers)[0], (typeof f.brokers)[0]];
  const meta = { meta: { ownerId: "owner-1" } };
  await first.call("worker.queue.add", { serviceId, value: "a" }, meta);
  await first.call("worker.queue.add", { serviceId, value: "b" }, meta);
  expect(await first.call("worker.queue.fetch", { serviceId, workerId: "w1", timeToRecover: 120 }, meta)).toBe("a");
  await first.stop();
  const t0 = Date.now();
  expect(await second.call("worker.queue.fetch", { serviceId, workerId: "w2" }, meta)).toBe("b");
  expect(Date.now() - t0).toBeLessThan(3000);
  // The running task kept its holder across the hand-over.
  expect(await second.call("worker.queue.fetch", { serviceId, workerId: "w1" }, meta)).toBe("a");
  const owned = await second.call<{ ownedQueues: string[] }, object>("worker.queue.health", {});
  expect(owned.ownedQueues).toContain(`owner-1/${serviceId}`);
});
