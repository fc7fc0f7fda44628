/** cancel: a waiting task is never delivered; a running one is flagged to its worker; the workflow hears of it. */
import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { waitFor } from "../helpers/queue-cluster";
import { queueFixture } from "../helpers/queue-fixture";

const completed: { token: unknown; result?: unknown; error?: any }[] = [];
const activity: ServiceSchema = {
  name: "flow.activity",
  actions: {
    completed(ctx: Context<{ token: unknown; result?: unknown; error?: unknown }>) {
      completed.push(ctx.params);
      return true;
    },
  },
};
const f = queueFixture("job_cancel", { services: [activity] });

test("a cancelled waiting task is never delivered, and the workflow gets the cancellation", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "a", taskId: "t-a", token: { wf: "a" } });
  await f.call("add", { serviceId, value: "b", taskId: "t-b" });
  expect(await f.call("cancel", { serviceId, taskId: "t-a" })).toMatchObject({ ok: true, state: "cancelled" });
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBe("b");
  await f.call("ack", { serviceId, workerId: "w" });
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBeNull();
  await waitFor(() => completed.some(c => (c.token as any).wf === "a"));
  expect(completed.find(c => (c.token as any).wf === "a")!.error).toMatchObject({ type: "TASK_CANCELLED" });
  expect(await f.call("status", { serviceId, taskId: "t-a" })).toMatchObject({ state: "cancelled" });
});

test("a running task is flagged; its worker learns it on update and fetch; it is not delivered again", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "run", taskId: "t-run", token: { wf: "run" } });
  expect(await f.call("fetchTask", { serviceId, workerId: "w" })).toMatchObject({ cancelled: false });
  expect(await f.call("cancel", { serviceId, taskId: "t-run" })).toMatchObject({ ok: true, state: "leased" });
  expect(await f.call("update", { serviceId, workerId: "w" })).toMatchObject({ ok: true, cancelled: true });
  expect(await f.call("fetchTask", { serviceId, workerId: "w" })).toMatchObject({ taskId: "t-run", cancelled: true });
  expect(await f.call("release", { serviceId, workerId: "w" })).toBe(true);
  expect(await f.call("fetch", { serviceId, workerId: "w2" })).toBeNull();
  await waitFor(() => completed.some(c => (c.token as any).wf === "run"));
  expect(completed.find(c => (c.token as any).wf === "run")!.error).toMatchObject({ type: "TASK_CANCELLED" });
});

test("cancelling an unknown task does nothing", async () => {
  expect(await f.call("cancel", { serviceId: randomUUID(), taskId: "nope" })).toMatchObject({
    ok: false,
    state: "unknown",
  });
});
