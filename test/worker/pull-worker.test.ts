/**
 * The worker loop against a scripted transport (no queue behind it): what a worker does with a
 * task its ack brought (ackThenFetch) when it is closing.
 */
import { PullWorker, type TaskHandler } from "../../lib/worker/pull-worker";
import type { DeliveredTask, FailureKind, LeaseOutcome, TaskTransport } from "../../lib/worker/task-transport";

const task = (taskId: string): DeliveredTask => ({
  taskId,
  attempt: 1,
  leaseUntil: Date.now() + 60_000,
  cancelled: false,
  value: { taskId },
});

class ScriptedTransport implements TaskTransport {
  readonly calls: string[] = [];
  /** Runs inside ackThenFetch, before it answers (to start a close at that moment). */
  duringAck: () => void = () => undefined;
  private readonly waiting = [task("t1"), task("t2"), task("t3")];

  async fetch(): Promise<DeliveredTask | null> {
    this.calls.push("fetch");
    return this.waiting.shift() ?? null;
  }
  async ack(_w: string, taskId: string): Promise<LeaseOutcome> {
    this.calls.push(`ack ${taskId}`);
    return { ok: true };
  }
  async ackThenFetch(_w: string, taskId: string): Promise<{ outcome: LeaseOutcome; next?: DeliveredTask | null }> {
    this.calls.push(`ackThenFetch ${taskId}`);
    this.duringAck();
    return { outcome: { ok: true }, next: this.waiting.shift() ?? null };
  }
  async update(): Promise<LeaseOutcome> {
    return { ok: true };
  }
  async release(_w: string, taskId: string): Promise<boolean> {
    this.calls.push(`release ${taskId}`);
    return true;
  }
  classify(): FailureKind {
    return "transient";
  }
  explainStop(err: unknown): Error {
    return err instanceof Error ? err : new Error(String(err));
  }
}

class ScriptedWorker extends PullWorker {
  constructor(transport: TaskTransport, handler: TaskHandler, concurrency = 1) {
    super(transport, { serviceId: "s", concurrency, wait: 0, autorun: false }, handler, {
      workerId: "w",
      logger: { warn() {}, error() {} },
    });
  }
}

test("acks chain: each ack brings the next task, and only an empty answer leads to a fetch", async () => {
  const transport = new ScriptedTransport();
  const ran: string[] = [];
  const worker = new ScriptedWorker(transport, async (value: { taskId: string }) => {
    ran.push(value.taskId);
    if (ran.length === 3) void worker.close(1000);
  });
  await worker.run();
  expect(ran).toEqual(["t1", "t2", "t3"]);
  // The worker was closing when t3 ended: a plain ack.
  expect(transport.calls).toEqual(["fetch", "ackThenFetch t1", "ackThenFetch t2", "ack t3"]);
});

test("a task the last ack brought while the worker was closing is released, not run", async () => {
  const transport = new ScriptedTransport();
  const ran: string[] = [];
  const worker = new ScriptedWorker(transport, async (value: { taskId: string }) => {
    ran.push(value.taskId);
  });
  transport.duringAck = () => void worker.close(1000);
  await worker.run();
  expect(ran).toEqual(["t1"]);
  expect(transport.calls).toEqual(["fetch", "ackThenFetch t1", "release t2"]);
});

test("close() resolves only after a long poll still in flight has given back what it brought", async () => {
  // Slot 1 runs t1, which ignores its signal; slot 2's fetch is a long poll that answers only
  // once close() has given t1 back (the owner hands it to the poll already waiting).
  const transport = new ScriptedTransport();
  let answerPoll: (t: DeliveredTask) => void = () => undefined;
  let fetches = 0;
  transport.fetch = async () => {
    transport.calls.push("fetch");
    if (++fetches === 1) return task("t1");
    return new Promise<DeliveredTask>(resolve => (answerPoll = resolve));
  };
  const release = transport.release.bind(transport);
  transport.release = async (w: string, taskId: string) => {
    const done = await release(w, taskId);
    if (transport.calls.filter(c => c === "release t1").length === 1) setTimeout(() => answerPoll(task("t1")), 50);
    return done;
  };
  let started = false;
  const worker = new ScriptedWorker(
    transport,
    async () => {
      started = true;
      await new Promise(resolve => setTimeout(resolve, 500));
    },
    2,
  );
  void worker.run();
  while (!started || fetches < 2) await new Promise(resolve => setTimeout(resolve, 5));
  await worker.close(20);
  // t1 was given back by close(), then again by the slot whose poll brought it: both before close() resolved.
  expect(transport.calls.filter(c => c === "release t1")).toHaveLength(2);
});
