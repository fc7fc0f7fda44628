/**
 * Task events are emitted only while something listens to them: a listener that joins later (on
 * another node, over NATS) gets the events from then on, and none are emitted while nobody listens.
 */
import { randomUUID } from "node:crypto";
import { ServiceBroker, type Context } from "moleculer";
import { startQueueBroker, waitFor } from "../helpers/queue-cluster";
import { dropKeyspace, testClient, uniqueKeyspace } from "../helpers/cassandra";

const keyspace = uniqueKeyspace("job_listeners");
const namespace = `listeners-${randomUUID().slice(0, 8)}`;
const transporter = "nats://127.0.0.1:4222" as const;
let client: Awaited<ReturnType<typeof testClient>>;
let queue: ServiceBroker;
let audit: ServiceBroker | undefined;

beforeAll(async () => {
  client = await testClient();
  queue = await startQueueBroker("listeners-queue", { keyspace, client, namespace, transporter });
});

afterAll(async () => {
  await audit?.stop();
  await queue?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

const call = (action: string, params: object) =>
  queue.call(`worker.queue.${action}`, params, { meta: { ownerId: "o" } });

async function runOne(serviceId: string, taskId: string): Promise<void> {
  await call("add", { serviceId, taskId, value: taskId });
  expect(await call("fetch", { serviceId, workerId: "w" })).toBe(taskId);
  expect(await call("ack", { serviceId, workerId: "w" })).toBe(true);
}

test("no task event is emitted while nobody listens; a listener joining later gets them", async () => {
  const serviceId = randomUUID();
  const emitted: string[] = [];
  const emit = queue.emit.bind(queue);
  queue.emit = ((eventName: string, ...rest: unknown[]) => {
    emitted.push(eventName);
    return (emit as (...a: unknown[]) => unknown)(eventName, ...rest);
  }) as ServiceBroker["emit"];

  await runOne(serviceId, "before");
  expect(emitted.filter(e => e.startsWith("worker.queue.task."))).toEqual([]);

  const seen: { event: string; taskId: string }[] = [];
  audit = new ServiceBroker({
    nodeID: "listeners-audit",
    namespace,
    transporter: transporter as "NATS",
    logger: false,
  });
  audit.createService({
    name: "audit",
    events: {
      "worker.queue.task.*"(ctx: Context<{ taskId: string }>) {
        seen.push({ event: ctx.eventName ?? "", taskId: ctx.params.taskId });
      },
    },
  });
  await audit.start();
  // The queue's node learns of the listener from the network (no deadline decides: the test's timeout).
  await waitFor(() => queue.hasEventListener("worker.queue.task.completed"), 120_000);

  await runOne(serviceId, "after");
  await waitFor(() => seen.some(s => s.event === "worker.queue.task.completed"), 120_000);
  expect(seen.filter(s => s.taskId === "before")).toEqual([]);
  expect(new Set(seen.filter(s => s.taskId === "after").map(s => s.event))).toEqual(
    new Set(["worker.queue.task.added", "worker.queue.task.delivered", "worker.queue.task.completed"]),
  );

  // The listener leaves: nothing is emitted again.
  await audit.stop();
  audit = undefined;
  await waitFor(() => !queue.hasEventListener("worker.queue.task.completed"), 120_000);
  emitted.length = 0;
  await runOne(serviceId, "gone");
  expect(emitted.filter(e => e.startsWith("worker.queue.task."))).toEqual([]);
});
