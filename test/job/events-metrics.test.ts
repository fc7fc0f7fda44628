/** Task events for every transition, and the queue's metrics. */
import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { waitFor } from "../helpers/queue-cluster";
import { queueFixture } from "../helpers/queue-fixture";

const seen: { event: string; params: any }[] = [];
const listener: ServiceSchema = {
  name: "audit",
  events: {
    "worker.queue.task.*"(ctx: Context<any>) {
      seen.push({ event: ctx.eventName ?? "", params: ctx.params });
    },
  },
};
const f = queueFixture("job_events", { services: [listener], metrics: true, engine: { maxAttempts: 1 } });

test("added, delivered, completed, failed, released, dead and cancelled are emitted", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: 1, taskId: "e1" });
  await f.call("fetch", { serviceId, workerId: "w" });
  await f.call("ack", { serviceId, workerId: "w" });
  await f.call("add", { serviceId, value: 2, taskId: "e2" });
  await f.call("fetch", { serviceId, workerId: "w" });
  await f.call("ack", { serviceId, workerId: "w", error: "bad" });
  await f.call("add", { serviceId, value: 3, taskId: "e3", maxAttempts: 2 });
  await f.call("fetch", { serviceId, workerId: "w" });
  await f.call("release", { serviceId, workerId: "w" });
  await f.call("add", { serviceId, value: 4, taskId: "e4" });
  await f.call("cancel", { serviceId, taskId: "e4" });
  await f.call("fetch", { serviceId, workerId: "w" }); // e3 again
  await f.call("release", { serviceId, workerId: "w" }); // second attempt of 2: dead
  await waitFor(() => seen.some(s => s.event.endsWith(".dead")));
  const types = new Set(seen.map(s => s.event.replace("worker.queue.task.", "")));
  for (const t of ["added", "delivered", "completed", "failed", "released", "dead", "cancelled"])
    expect(types).toContain(t);
  expect(seen.find(s => s.event.endsWith(".completed"))!.params).toMatchObject({
    taskId: "e1",
    serviceId,
    ownerId: "owner-1",
  });
});

test("metrics count operations and task events", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: 1 });
  await f.call("fetch", { serviceId, workerId: "m" });
  await f.call("ack", { serviceId, workerId: "m" });
  await f.call("stats", { serviceId });
  const ops = f.broker.metrics.getMetric("queue.operations.total")!.snapshot() as any[];
  expect(ops.find(v => v.labels.action === "add" && v.labels.outcome === "ok")?.value).toBeGreaterThan(0);
  const events = f.broker.metrics.getMetric("queue.task.events.total")!.snapshot() as any[];
  expect(events.find(v => v.labels.type === "completed")?.value).toBeGreaterThan(0);
  const depth = f.broker.metrics.getMetric("queue.depth")!.snapshot() as any[];
  expect(depth.find(v => v.labels.serviceId === serviceId)?.value).toBe(0);
});
