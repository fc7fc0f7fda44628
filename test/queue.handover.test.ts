/** G5: a result of a task with a workflow token reaches the activity service, retried until accepted. */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { Context, ServiceSchema } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { owner, startQueueBroker, startQueueCluster, waitFor } from "./helpers/queue-cluster";

let client: Client;
const keyspace = uniqueKeyspace("queue_handover");

interface Completed {
  params: { token: unknown; result?: unknown; error?: unknown };
  meta: Record<string, unknown>;
}

/** An activity service that refuses the first `failures` calls, then records what it receives. */
function activity(received: Completed[], state: { failures: number }): ServiceSchema {
  return {
    name: "flow.activity",
    actions: {
      completed(ctx: Context<Completed["params"], Record<string, unknown>>) {
        if (state.failures > 0) {
          state.failures--;
          throw new Error("activity service is down");
        }
        received.push({ params: ctx.params, meta: ctx.meta });
        return true;
      },
    },
  };
}

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

test("the worker's result reaches the activity service with the acking caller's meta", async () => {
  const received: Completed[] = [];
  const broker = await startQueueBroker("handover-1", {
    keyspace,
    client,
    services: [activity(received, { failures: 0 })],
  });
  try {
    const serviceId = randomUUID();
    const token = { processId: "p-1", instanceId: "i-1", elementId: "task-a" };
    await broker.call("worker.queue.add", { serviceId, value: { job: 1 }, token }, owner("o1"));
    expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o1"))).toEqual({ job: 1 });
    const ackMeta = { ownerId: "o1", user: { id: "worker-user" } };
    expect(
      await broker.call("worker.queue.ack", { serviceId, workerId: "w", result: { sum: 42 } }, { meta: ackMeta }),
    ).toBe(true);
    await waitFor(() => received.length === 1);
    expect(received[0]!.params).toEqual({ token, result: { sum: 42 } });
    expect(received[0]!.meta).toMatchObject({ ownerId: "o1", user: { id: "worker-user" } });
    expect(typeof received[0]!.meta["queueTaskId"]).toBe("string");

    // An error instead of a result is handed over the same way.
    await broker.call("worker.queue.add", { serviceId, value: 2, token }, owner("o1"));
    await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o1"));
    await broker.call("worker.queue.ack", { serviceId, workerId: "w", error: { message: "failed" } }, owner("o1"));
    await waitFor(() => received.length === 2);
    expect(received[1]!.params).toEqual({ token, error: { message: "failed" } });

    // A task without token is not handed over.
    await broker.call("worker.queue.add", { serviceId, value: 3 }, owner("o1"));
    await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o1"));
    await broker.call("worker.queue.ack", { serviceId, workerId: "w", result: 3 }, owner("o1"));
    await new Promise(r => setTimeout(r, 300));
    expect(received).toHaveLength(2);
  } finally {
    await broker.stop();
  }
});

test("an activity service that is down for a while gets the result once it is back", async () => {
  const received: Completed[] = [];
  const state = { failures: 3 };
  const broker = await startQueueBroker("handover-2", {
    keyspace,
    client,
    services: [activity(received, state)],
    engine: { handoverRetryMs: 50 },
  });
  try {
    const serviceId = randomUUID();
    await broker.call("worker.queue.add", { serviceId, value: "v", token: { t: 1 } }, owner("o2"));
    await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o2"));
    expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w", result: "r" }, owner("o2"))).toBe(true);
    await waitFor(() => received.length === 1);
    expect(state.failures).toBe(0);
    await new Promise(r => setTimeout(r, 300));
    expect(received).toHaveLength(1);
  } finally {
    await broker.stop();
  }
});

test("a hand-over pending when its owner stops is completed by the node that takes the queue over", async () => {
  const received: Completed[] = [];
  const state = { failures: 1_000_000 };
  const brokers = await startQueueCluster(2, {
    keyspace,
    client,
    services: [activity(received, state)],
    engine: { handoverRetryMs: 50, handoverMaxDelayMs: 100 },
  });
  try {
    const serviceId = randomUUID();
    const [first, second] = brokers as [(typeof brokers)[0], (typeof brokers)[0]];
    await first.call("worker.queue.add", { serviceId, value: "v", token: { t: 2 } }, owner("o3"));
    await first.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o3"));
    expect(await first.call("worker.queue.ack", { serviceId, workerId: "w", result: "r" }, owner("o3"))).toBe(true);
    await new Promise(r => setTimeout(r, 200));
    expect(received).toHaveLength(0);
    await first.stop();
    state.failures = 0;
    // Any call makes the second node take the queue over; the pending hand-over goes with it.
    expect(await second.call("worker.queue.fetch", { serviceId, workerId: "w" }, owner("o3"))).toBeNull();
    await waitFor(() => received.length === 1);
    expect(received[0]!.params).toEqual({ token: { t: 2 }, result: "r" });
  } finally {
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
});
