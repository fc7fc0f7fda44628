/** Graceful shutdown: a stopping node hands its queues over at once instead of letting others wait out its lease. */
import { randomUUID } from "node:crypto";
import { queueFixture } from "../helpers/queue-fixture";

// An owner lease of a minute: without the hand-over, the second node would wait that long.
const f = queueFixture("job_shutdown", { nodes: 2, engine: { ownerLeaseMs: 60_000 } });

test("the other node serves the queue right after the owner stops", async () => {
  const serviceId = randomUUID();
  const meta = { meta: { ownerId: "owner-1" } };
  await f.brokers[0]!.call("worker.queue.add", { serviceId, value: "a" }, meta);
  // Placement chose the owner: stop that one, serve through the other.
  const owns = (b: (typeof f.brokers)[0]) =>
    (b.getLocalService("worker.queue") as unknown as { engine: { ownedQueues(): string[] } }).engine
      .ownedQueues()
      .includes(`owner-1/${serviceId}`);
  const first = f.brokers.find(owns)!;
  const second = f.brokers.find(b => b !== first)!;
  await first.call("worker.queue.add", { serviceId, value: "b" }, meta);
  expect(await first.call("worker.queue.fetch", { serviceId, workerId: "w1", timeToRecover: 120 }, meta)).toBe("a");
  await first.stop();
  // Handed over: the stopped owner released the row (no lease for the next one to wait out)...
  const row = await f.client.execute(
    `SELECT node FROM ${f.keyspace}.queue_owner WHERE queue = ?`,
    [`owner-1/${serviceId}`],
    {
      prepare: true,
    },
  );
  expect(row.first()?.["node"]).toBe("");
  // ...with a final checkpoint, so the next owner continues from there.
  expect(await second.call("worker.queue.fetch", { serviceId, workerId: "w2" }, meta)).toBe("b");
  // The running task kept its holder across the hand-over.
  expect(await second.call("worker.queue.fetch", { serviceId, workerId: "w1" }, meta)).toBe("a");
  const owned = await second.call<{ ownedQueues: string[] }, object>("worker.queue.health", {});
  expect(owned.ownedQueues).toContain(`owner-1/${serviceId}`);
});
