/**
 * QueueWorker against the real queue service on the test Cassandra: concurrency, heartbeats,
 * retries and dead letters, cancellation and lost leases through the handler's signal, close()
 * with running tasks (checked with the history of every task), and the service mixin.
 */
import { randomUUID } from "node:crypto";
import { Errors, type Service, type ServiceBroker } from "moleculer";
import { QueueWorker, type QueueWorkerBroker } from "../../lib/worker/queue-worker";
import { QueueWorkerMixin, type QueueWorkerMixinVars } from "../../lib/worker/queue-worker.mixin";
import type { PullWorker, WorkerTask } from "../../lib/worker/pull-worker";
import { TaskAbortedError } from "../../lib/worker/worker-errors";
import { History, recordWorker } from "../helpers/history";
import { waitFor } from "../helpers/queue-cluster";
import { queueFixture, sleep } from "../helpers/queue-fixture";

const OWNER = "owner-worker";
const meta = { ownerId: OWNER };
const f = queueFixture("worker_queue", { engine: { maxAttempts: 3 } });
const call = <T = any>(action: string, params: object) => f.call<T>(action, params, OWNER);

const running: PullWorker[] = [];
/** Closes every worker a test started, also when it failed. */
function track<W extends PullWorker>(worker: W): W {
  running.push(worker);
  return worker;
}
afterEach(async () => {
  await Promise.all(running.splice(0).map(w => w.close(500)));
});

async function addTasks(serviceId: string, values: object[], extra: object = {}): Promise<string[]> {
  const ids: string[] = [];
  for (const [i, value] of values.entries()) {
    const taskId = `t-${i}`;
    await call("add", { serviceId, value, taskId, ...extra });
    ids.push(taskId);
  }
  return ids;
}

test("runs at most `concurrency` handlers at once, one worker id per slot", async () => {
  const serviceId = randomUUID();
  await addTasks(
    serviceId,
    Array.from({ length: 12 }, (_, n) => ({ n })),
  );
  let active = 0;
  let maxActive = 0;
  const slots = new Set<string>();
  const results = new Map<string, unknown>();
  const worker = track(
    new QueueWorker(f.broker, { serviceId, concurrency: 3, meta, wait: 1, timeToRecover: 20 }, async (value, task) => {
      active++;
      maxActive = Math.max(maxActive, active);
      slots.add(task.workerId);
      await sleep(150);
      active--;
      return { doubled: (value as { n: number }).n * 2 };
    }),
  );
  worker.on("completed", (task, result) => results.set(task.id, result));
  await waitFor(() => results.size === 12, 30_000);
  expect(maxActive).toBe(3);
  expect([...slots].sort()).toEqual([0, 1, 2].map(i => `${worker.workerId}-${i}`));
  expect(results.get("t-5")).toEqual({ doubled: 10 });
  expect(await call("stats", { serviceId })).toMatchObject({ ready: 0, inFlight: 0 });
});

test("each ack brings the slot's next task: one call per task, a long poll only when none came", async () => {
  const serviceId = randomUUID();
  const ids = await addTasks(
    serviceId,
    Array.from({ length: 8 }, (_, n) => ({ n })),
  );
  const calls: string[] = [];
  const counting: QueueWorkerBroker = {
    nodeID: f.broker.nodeID,
    getLogger: f.broker.getLogger.bind(f.broker),
    call: ((action: string, params?: unknown, opts?: object) => {
      calls.push(action);
      return f.broker.call(action, params, opts);
    }) as ServiceBroker["call"],
  };
  const done: string[] = [];
  const worker = track(
    new QueueWorker(counting, { serviceId, meta, concurrency: 1, wait: 1, timeToRecover: 20 }, async value => value),
  );
  worker.on("completed", task => done.push(task.id));
  await waitFor(() => done.length === 8, 20_000);
  expect(done).toEqual(ids);
  // One fetch found t-0; each ack brought the next task; the last brought none.
  expect(calls.slice(0, 9)).toEqual(["worker.queue.fetchTask", ...Array<string>(8).fill("worker.queue.ackTask")]);
  expect(calls.slice(9).every(c => c === "worker.queue.fetchTask")).toBe(true);
  expect(await call("stats", { serviceId })).toMatchObject({ ready: 0, inFlight: 0 });
});

test("heartbeats keep a task that runs longer than timeToRecover from going to another worker", async () => {
  const serviceId = randomUUID();
  await addTasks(serviceId, [{ long: true }]);
  const timeToRecover = 2;
  let firstLease = 0;
  let lastLease = 0;
  let handlerDone = false;
  const completed: WorkerTask[] = [];
  const worker = track(
    new QueueWorker(f.broker, { serviceId, meta, wait: 1, timeToRecover }, async (_value, task) => {
      firstLease = task.leaseUntil;
      await sleep(timeToRecover * 2500);
      lastLease = task.leaseUntil;
      handlerDone = true;
      return "done";
    }),
  );
  worker.on("completed", task => completed.push(task));
  await waitFor(() => firstLease > 0, 20_000);
  // A rival polls all along; with heartbeats the lease never runs out, so it never gets the task.
  const rivalGot: unknown[] = [];
  while (!handlerDone) {
    const task = await call("fetchTask", { serviceId, workerId: "rival", timeToRecover: 30 });
    if (task !== null) rivalGot.push(task);
    await sleep(250);
  }
  await waitFor(() => completed.length === 1);
  expect(rivalGot).toEqual([]);
  expect(completed[0]).toMatchObject({ id: "t-0", attempt: 1 });
  expect(lastLease).toBeGreaterThan(firstLease + timeToRecover * 1000);
  expect(await call("status", { serviceId, taskId: "t-0" })).toMatchObject({ state: "done" });
});

test("a throwing handler's task is released with its error: retried, then dead after maxAttempts", async () => {
  const serviceId = randomUUID();
  await addTasks(serviceId, [{ poison: true }, { flaky: true }]);
  const failed: { id: string; attempt: number; message: string }[] = [];
  const completed: { id: string; attempt: number }[] = [];
  const worker = track(
    new QueueWorker(f.broker, { serviceId, meta, wait: 1, timeToRecover: 20 }, async (value, task) => {
      const v = value as { poison?: boolean; flaky?: boolean };
      if (v.poison || (v.flaky && task.attempt === 1)) {
        throw Object.assign(new Error(`boom ${task.attempt}`), { code: "E_BOOM" });
      }
      return "ok";
    }),
  );
  worker.on("failed", (task, err) =>
    failed.push({ id: task.id, attempt: task.attempt, message: (err as Error).message }),
  );
  worker.on("completed", task => completed.push({ id: task.id, attempt: task.attempt }));
  await waitFor(() => completed.length === 1 && failed.filter(x => x.id === "t-0").length === 3, 30_000);
  expect(completed).toEqual([{ id: "t-1", attempt: 2 }]);
  expect(failed.filter(x => x.id === "t-0").map(x => x.attempt)).toEqual([1, 2, 3]);
  await waitFor(async () => (await call<unknown[]>("dead", { serviceId })).length === 1);
  expect(await call("dead", { serviceId })).toEqual([
    expect.objectContaining({
      taskId: "t-0",
      attempt: 3,
      reason: "MAX_ATTEMPTS",
      error: { name: "Error", message: "boom 3", code: "E_BOOM" },
    }),
  ]);
});

test("cancelling a running task aborts the handler's signal; the task ends as cancelled", async () => {
  const serviceId = randomUUID();
  await addTasks(serviceId, [{ cancel: "me" }]);
  let started = false;
  const failed: unknown[] = [];
  const worker = track(
    new QueueWorker(f.broker, { serviceId, meta, wait: 1, timeToRecover: 1.5 }, async (_value, task) => {
      started = true;
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, 20_000);
        task.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      throw task.signal.reason;
    }),
  );
  worker.on("failed", (_task, err) => failed.push(err));
  await waitFor(() => started, 20_000);
  expect(await call("cancel", { serviceId, taskId: "t-0" })).toMatchObject({ ok: true, state: "leased" });
  // A heartbeat brings the news and aborts the handler (without it, the handler would end by its
  // own 20 s timer with no abort reason).
  await waitFor(() => failed.length === 1, 40_000);
  expect(failed[0]).toBeInstanceOf(TaskAbortedError);
  expect(failed[0]).toMatchObject({ type: "TASK_CANCELLED", taskId: "t-0" });
  await waitFor(async () => (await call("status", { serviceId, taskId: "t-0" })).state === "cancelled");
});

test("a lost lease aborts the signal with LEASE_LOST, and the late result is not acked", async () => {
  const serviceId = randomUUID();
  await addTasks(serviceId, [{ lose: "me" }]);
  // Heartbeats fail while `blocked`, as through a network partition.
  let blocked = true;
  const partitioned: QueueWorkerBroker = {
    nodeID: f.broker.nodeID,
    getLogger: (...args) => f.broker.getLogger(...args),
    call: ((action: string, params: object, opts: object) =>
      blocked && action.endsWith(".update")
        ? Promise.reject(new Errors.MoleculerRetryableError("partitioned", 503, "TEST_PARTITION"))
        : f.broker.call(action, params, opts)) as ServiceBroker["call"],
  };
  let started = false;
  const failed: unknown[] = [];
  const completed: unknown[] = [];
  const errors: Error[] = [];
  const worker = track(
    new QueueWorker(partitioned, { serviceId, meta, wait: 1, timeToRecover: 1 }, async (_value, task) => {
      started = true;
      await new Promise<void>(resolve => task.signal.addEventListener("abort", () => resolve()));
      return "late result";
    }),
  );
  worker.on("failed", (_task, err) => failed.push(err));
  worker.on("completed", task => completed.push(task));
  worker.on("error", err => errors.push(err));
  await waitFor(() => started, 20_000);
  await sleep(1300);
  expect(await call("fetchTask", { serviceId, workerId: "rival", timeToRecover: 30 })).toMatchObject({
    taskId: "t-0",
    attempt: 2,
  });
  blocked = false;
  await waitFor(() => failed.length === 1, 10_000);
  expect(failed[0]).toMatchObject({ type: "LEASE_LOST", taskId: "t-0" });
  expect(completed).toEqual([]);
  expect(errors.length).toBeGreaterThan(0);
  expect(await call("ackTask", { serviceId, workerId: "rival", taskId: "t-0", result: "rival's" })).toEqual({
    ok: true,
    taskId: "t-0",
  });
});

test("close() finishes or gives back every running task; none is lost or held twice", async () => {
  const serviceId = randomUUID();
  const timeToRecover = 30;
  const history = new History();
  // t-0 and t-1 ignore their signal and take 4 s; the others take 100 ms.
  const values = Array.from({ length: 10 }, (_, n) => ({ n, slow: n < 2 }));
  for (const id of await addTasks(serviceId, values, { maxAttempts: 10 })) history.add(id);
  const record = (worker: PullWorker) => recordWorker(worker, history, timeToRecover);
  const failed: { id: string; err: unknown }[] = [];
  let lateFinishes = 0;
  const first = track(
    new QueueWorker(
      f.broker,
      { serviceId, meta, concurrency: 4, wait: 1, timeToRecover, autorun: false },
      async (value: { slow: boolean }) => {
        await sleep(value.slow ? 4000 : 100);
        if (value.slow) lateFinishes++;
        return "first";
      },
    ),
  );
  record(first);
  first.on("failed", (task, err) => failed.push({ id: task.id, err }));
  void first.run();
  await waitFor(() => first.activeCount > 0, 20_000);
  await sleep(400);

  // After the 800 ms grace the slow tasks are aborted (had close waited for them, they would have
  // finished and not failed with WORKER_CLOSED).
  await first.close(800);
  expect(first.isRunning).toBe(false);
  expect(failed.map(x => x.id).sort()).toEqual(["t-0", "t-1"]);
  expect(failed.every(x => x.err instanceof TaskAbortedError && x.err.type === "WORKER_CLOSED")).toBe(true);
  for (const taskId of ["t-0", "t-1"]) {
    expect(await call("status", { serviceId, taskId })).toMatchObject({ state: "waiting" });
  }

  const second = track(
    new QueueWorker(f.broker, { serviceId, meta, concurrency: 2, wait: 1, timeToRecover }, async () => "second"),
  );
  record(second);
  await waitFor(() => history.verdict().lost.length === 0, 30_000);
  // The abandoned handlers finish late; their results must not be acked.
  await waitFor(() => lateFinishes === 2, 10_000);
  await sleep(300);
  const verdict = history.verdict();
  expect(verdict).toMatchObject({
    tasks: 10,
    lost: [],
    duplicatedWhileLeased: [],
    deliveredAfterAck: [],
    completedTwice: [],
  });
  expect(await call("stats", { serviceId })).toMatchObject({ ready: 0, inFlight: 0 });
});

test("the mixin starts a worker per declared queue with the service and closes them when it stops", async () => {
  const [queueA, queueB] = [randomUUID(), randomUUID()];
  await addTasks(queueA, [{ n: 1 }, { n: 2 }, { n: 3 }]);
  await addTasks(queueB, [{ n: 4 }]);
  const seen: string[] = [];
  const service = f.broker.createService({
    name: "thumbnails",
    mixins: [QueueWorkerMixin({ meta, wait: 1, timeToRecover: 20 })],
    settings: { label: "thumb" },
    queueWorkers: {
      [queueA]: {
        concurrency: 2,
        async handler(this: Service<{ label: string }>, value: { n: number }, task: WorkerTask) {
          seen.push(
            `${this.settings.label}:${value.n}@${task.workerId.endsWith("-0") || task.workerId.endsWith("-1")}`,
          );
          return value.n;
        },
      },
      [queueB]: async function (this: Service, value: { n: number }) {
        seen.push(`${this.name}:${value.n}`);
      },
    },
  }) as Service & QueueWorkerMixinVars;
  await waitFor(() => seen.length === 4, 30_000);
  expect(seen.sort()).toEqual(["thumb:1@true", "thumb:2@true", "thumb:3@true", "thumbnails:4"]);
  const workers = [...service.$queueWorkers.values()];
  expect(workers.map(w => [w.serviceId, w.concurrency, w.isRunning])).toEqual([
    [queueA, 2, true],
    [queueB, 1, true],
  ]);

  await f.broker.destroyService(service);
  expect(workers.every(w => !w.isRunning)).toBe(true);
  await call("add", { serviceId: queueA, value: { n: 5 }, taskId: "after-stop" });
  await sleep(1500);
  expect(await call("status", { serviceId: queueA, taskId: "after-stop" })).toMatchObject({ state: "waiting" });
  expect(seen).toHaveLength(4);
});
