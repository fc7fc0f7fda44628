/** release, retries, dead letters, redrive and purge. */
import { randomUUID } from "node:crypto";
import { fetchWhenDue, queueFixture, sleep } from "../helpers/queue-fixture";

const f = queueFixture("job_retry", { engine: { maxAttempts: 3 } });

test("a poison task ends in the dead-letter list with its last error after maxAttempts", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "poison", taskId: "p" });
  for (let attempt = 1; attempt <= 3; attempt++) {
    const task = await f.call("fetchTask", { serviceId, workerId: "w" });
    expect(task).toMatchObject({ taskId: "p", attempt });
    expect(await f.call("release", { serviceId, workerId: "w", error: { message: `boom ${attempt}` } })).toBe(true);
  }
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBeNull();
  const dead = await f.call("dead", { serviceId });
  expect(dead).toEqual([
    expect.objectContaining({ taskId: "p", attempt: 3, reason: "MAX_ATTEMPTS", error: { message: "boom 3" } }),
  ]);
  expect(await f.call("status", { serviceId, taskId: "p" })).toMatchObject({ state: "dead" });
});

test("an expired lease counts as an attempt too", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "slow", taskId: "s", maxAttempts: 2 });
  await f.call("fetch", { serviceId, workerId: "w1", timeToRecover: 0.2 });
  await sleep(250);
  expect(await f.call("fetchTask", { serviceId, workerId: "w2", timeToRecover: 0.2 })).toMatchObject({ attempt: 2 });
  await sleep(250);
  expect(await f.call("fetch", { serviceId, workerId: "w3" })).toBeNull();
  expect((await f.call("dead", { serviceId }))[0]).toMatchObject({ taskId: "s", reason: "MAX_ATTEMPTS" });
});

test("a redriven task is delivered again with a fresh attempt count", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "again", taskId: "r", maxAttempts: 1 });
  await f.call("fetch", { serviceId, workerId: "w" });
  await f.call("release", { serviceId, workerId: "w" });
  expect(await f.call("dead", { serviceId })).toHaveLength(1);
  expect(await f.call("redrive", { serviceId, taskIds: ["r"] })).toEqual({ redriven: 1 });
  expect(await f.call("fetchTask", { serviceId, workerId: "w" })).toMatchObject({
    taskId: "r",
    attempt: 1,
    value: "again",
  });
  expect(await f.call("ack", { serviceId, workerId: "w" })).toBe(true);
  expect(await f.call("dead", { serviceId })).toEqual([]);
});

test("release with a delay gives the task back only after the delay", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "later", taskId: "later" });
  await f.call("add", { serviceId, value: "next" });
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBe("later");
  // Ten minutes: not given back, whatever the machine's speed; the worker gets the next task.
  await f.call("release", { serviceId, workerId: "w", delay: 600 });
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBe("next");
  expect(await f.call("fetch", { serviceId, workerId: "w2" })).toBeNull();
  expect(await f.call("status", { serviceId, taskId: "later" })).toMatchObject({ state: "delayed" });
  // 0.4 s: it comes back, and not before its time.
  expect(await f.call("ack", { serviceId, workerId: "w" })).toBe(true);
  await f.call("add", { serviceId, value: "soon" });
  expect(await f.call("fetch", { serviceId, workerId: "w" })).toBe("soon");
  const released = Date.now();
  await f.call("release", { serviceId, workerId: "w", delay: 0.4 });
  const got = await fetchWhenDue(f, serviceId, "w");
  expect(got).toBe("soon");
  expect(Date.now() - released).toBeGreaterThanOrEqual(400);
});

test("purge empties waiting, delayed and dead tasks and leaves running ones alone", async () => {
  const serviceId = randomUUID();
  await f.call("add", { serviceId, value: "running" });
  expect(await f.call("fetch", { serviceId, workerId: "busy" })).toBe("running");
  await f.call("add", { serviceId, value: "waiting" });
  await f.call("add", { serviceId, value: "delayed", delay: 60 });
  expect(await f.call("purge", { serviceId })).toEqual({ purged: 2 });
  expect(await f.call("fetch", { serviceId, workerId: "other" })).toBeNull();
  expect(await f.call("ack", { serviceId, workerId: "busy" })).toBe(true);
});
