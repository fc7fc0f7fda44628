/** Delayed tasks: add with delay (seconds) or notBefore (ms timestamp) is not delivered before then. */
import { randomUUID } from "node:crypto";
import { queueFixture, sleep } from "../helpers/queue-fixture";

const f = queueFixture("job_delayed");

test("a delayed task waits; a ready one behind it goes first", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "in 0.5 s", delay: 0.5 });
  await f.call("add", { serviceId, value: "now" });
  expect(await f.call("fetch", { serviceId, workerId: "a" })).toBe("now");
  expect(await f.call("fetch", { serviceId, workerId: "b" })).toBeNull();
  expect((await f.call("stats", { serviceId })).delayed).toBe(1);
  await sleep(550);
  expect(await f.call("fetch", { serviceId, workerId: "b" })).toBe("in 0.5 s");
});

test("notBefore is an absolute time", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "at", notBefore: Date.now() + 400, taskId: "nb" });
  expect(await f.call("status", { serviceId, taskId: "nb" })).toMatchObject({ state: "delayed" });
  expect(await f.call("fetch", { serviceId, workerId: "a" })).toBeNull();
  await sleep(450);
  expect(await f.call("fetch", { serviceId, workerId: "a" })).toBe("at");
});

test("delay and notBefore together are refused, naming the field", async () => {
  await expect(
    f.call("add", { serviceId: randomUUID(), value: 1, delay: 1, notBefore: Date.now() }),
  ).rejects.toMatchObject({ type: "INVALID_PARAMETER", data: { field: "delay" } });
});
