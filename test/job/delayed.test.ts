/** Delayed tasks: add with delay (seconds) or notBefore (ms timestamp) is not delivered before then. */
import { randomUUID } from "node:crypto";
import { fetchWhenDue, queueFixture } from "../helpers/queue-fixture";

const f = queueFixture("job_delayed");

test("a delayed task waits; a ready one behind it goes first", async () => {
  const serviceId = randomUUID();
  // Ten minutes: still delayed whatever the machine's speed.
  await f.call("add", { serviceId, value: "in 10 min", delay: 600 });
  await f.call("add", { serviceId, value: "now" });
  expect(await f.call("fetch", { serviceId, workerId: "a" })).toBe("now");
  expect(await f.call("fetch", { serviceId, workerId: "b" })).toBeNull();
  expect((await f.call("stats", { serviceId })).delayed).toBe(1);
  // Half a second: it comes, and not before its time.
  const added = Date.now();
  await f.call("add", { serviceId, value: "in 0.5 s", delay: 0.5 });
  const got = await fetchWhenDue(f, serviceId, "b");
  expect(got).toBe("in 0.5 s");
  expect(Date.now() - added).toBeGreaterThanOrEqual(500);
  expect((await f.call("stats", { serviceId })).delayed).toBe(1);
});

test("notBefore is an absolute time", async () => {
  const serviceId = randomUUID();
  // One far in the future (whatever the machine's speed, it is still delayed when we look) and one
  // due soon: it may come only once its time has passed.
  await f.call("add", { serviceId, value: "later", notBefore: Date.now() + 600_000, taskId: "far" });
  expect(await f.call("status", { serviceId, taskId: "far" })).toMatchObject({ state: "delayed" });
  expect(await f.call("fetch", { serviceId, workerId: "a" })).toBeNull();
  const notBefore = Date.now() + 400;
  await f.call("add", { serviceId, value: "at", notBefore, taskId: "nb" });
  const got = await fetchWhenDue(f, serviceId, "a");
  expect(got).toBe("at");
  expect(Date.now()).toBeGreaterThanOrEqual(notBefore);
  expect((await f.call("stats", { serviceId })).delayed).toBe(1);
});

test("delay and notBefore together are refused, naming the field", async () => {
  await expect(
    f.call("add", { serviceId: randomUUID(), value: 1, delay: 1, notBefore: Date.now() }),
  ).rejects.toMatchObject({ type: "INVALID_PARAMETER", data: { field: "delay" } });
});
