/** update: heartbeats extend the lease (up to a maximum), store progress, emit an event, report cancellation. */
import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { queueFixture, sleep } from "../helpers/queue-fixture";

const progressEvents: unknown[] = [];
const listener: ServiceSchema = {
  name: "listener",
  events: {
    "worker.queue.task.progress"(ctx: Context<unknown>) {
      progressEvents.push(ctx.params);
    },
  },
};
const f = queueFixture("job_heartbeat", { engine: { maxLeaseMs: 1500 }, services: [listener] });

test("heartbeats keep a task whose work outlasts timeToRecover away from other workers", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "long job" });
  // 1 s of work on a 0.6 s lease, a beat every 0.25 s: 0.35 s of slack per beat, and 0.5 s before
  // the 1.5 s cap of maxLeaseMs, for a busy machine.
  const task = await f.call("fetchTask", { serviceId, workerId: "w1", timeToRecover: 0.6 });
  for (let i = 0; i < 4; i++) {
    await sleep(250);
    const beat = await f.call("update", { serviceId, workerId: "w1", progress: { percent: i * 25 } });
    expect(beat).toMatchObject({ ok: true, taskId: task.taskId, cancelled: false });
    expect(await f.call("fetch", { serviceId, workerId: "w2" })).toBeNull();
  }
  expect(await f.call("ack", { serviceId, workerId: "w1" })).toBe(true);
  expect(progressEvents.length).toBeGreaterThanOrEqual(4);
  expect(progressEvents[0]).toMatchObject({ type: "progress", taskId: task.taskId, serviceId, ownerId: "owner-1" });
  // Events carry metadata only, never the value or the progress.
  expect(JSON.stringify(progressEvents)).not.toContain("long job");
});

test("status reports the latest progress of a running task, decrypted for its owner", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "with progress" });
  const task = await f.call("fetchTask", { serviceId, workerId: "w1", timeToRecover: 60 });
  expect((await f.call("status", { serviceId, taskId: task.taskId })).progress).toBeUndefined();
  await f.call("update", { serviceId, workerId: "w1", progress: { percent: 10 } });
  await f.call("update", { serviceId, workerId: "w1", progress: { percent: 60, step: "copy" } });
  expect(await f.call("status", { serviceId, taskId: task.taskId })).toMatchObject({
    state: "leased",
    progress: { percent: 60, step: "copy" },
  });
  expect(await f.call("ack", { serviceId, workerId: "w1" })).toBe(true);
  expect((await f.call("status", { serviceId, taskId: task.taskId })).state).toBe("done");
});

test("a lease cannot be extended beyond the configured maximum", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "x" });
  const task = await f.call("fetchTask", { serviceId, workerId: "w1", timeToRecover: 1 });
  let last = task.leaseUntil;
  for (let i = 0; i < 4; i++) {
    await sleep(300);
    last = (await f.call("update", { serviceId, workerId: "w1" })).leaseUntil;
  }
  // maxLeaseMs is 1500: the deadline stops at lease start + 1.5 s.
  expect(last).toBeLessThanOrEqual(task.leaseUntil - 1000 + 1500);
  await sleep(Math.max(0, last - Date.now()) + 50);
  const other = await f.call("fetchTask", { serviceId, workerId: "w2" });
  expect(other).toMatchObject({ taskId: task.taskId, attempt: 2 });
});

test("update without a task says so", async () => {
  expect(await f.call("update", { serviceId: randomUUID(), workerId: "nobody" })).toEqual({
    ok: false,
    reason: "NO_TASK",
  });
});
