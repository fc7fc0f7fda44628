/** G7: bad input gets a clear Moleculer error naming the field, and stores nothing. */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { owner, startQueueBroker } from "./helpers/queue-cluster";

let client: Client;
let broker: ServiceBroker;
const keyspace = uniqueKeyspace("queue_validation");
const opts = owner("owner-v");

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("validation", { keyspace, client, service: { maxValueBytes: 1000 } });
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

async function failure(action: string, params: object, callOpts: object = opts): Promise<any> {
  try {
    await broker.call(`worker.queue.${action}`, params, callOpts);
  } catch (err) {
    return err;
  }
  throw new Error(`${action} succeeded but should have failed`);
}

const fieldsOf = (err: any): string[] =>
  Array.isArray(err.data) ? err.data.map((d: any) => d.field) : [err.data?.field];

test.each([
  ["add", { value: 1 }, "serviceId"],
  ["add", { serviceId: "not-a-uuid", value: 1 }, "serviceId"],
  ["add", { serviceId: randomUUID() }, "value"],
  ["add", { serviceId: randomUUID(), value: 1, token: "not an object" }, "token"],
  ["add", { serviceId: randomUUID(), value: 1, taskId: 12 }, "taskId"],
  ["fetch", { serviceId: randomUUID() }, "workerId"],
  ["fetch", { serviceId: randomUUID(), workerId: 5 }, "workerId"],
  ["fetch", { serviceId: randomUUID(), workerId: "w", timeToRecover: -1 }, "timeToRecover"],
  ["fetch", { serviceId: randomUUID(), workerId: "w", timeToRecover: "soon" }, "timeToRecover"],
  ["ack", { serviceId: randomUUID() }, "workerId"],
  ["ack", { workerId: "w" }, "serviceId"],
])("%s with %j is a validation error naming %s", async (action, params, field) => {
  const err = await failure(action, params);
  expect(err.type).toBe("VALIDATION_ERROR");
  expect(err.code).toBe(422);
  expect(fieldsOf(err)).toContain(field);
});

test("a value over the limit is refused with VALUE_TOO_LARGE and nothing is stored", async () => {
  const serviceId = randomUUID();
  const err = await failure("add", { serviceId, value: "x".repeat(2000) });
  expect(err.type).toBe("VALUE_TOO_LARGE");
  expect(err.data).toMatchObject({ field: "value", limit: 1000 });
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBeNull();
});

test("a result over the limit is refused and the task stays with its worker", async () => {
  const serviceId = randomUUID();
  await broker.call("worker.queue.add", { serviceId, value: "small" }, opts);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBe("small");
  const err = await failure("ack", { serviceId, workerId: "w", result: "y".repeat(2000) });
  expect(err.type).toBe("VALUE_TOO_LARGE");
  expect(err.data.field).toBe("result");
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBe("small");
});

/** [[[...]]] or {a:{a:...}}, `depth` levels, built without recursion. */
function deep(kind: "array" | "object", depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = kind === "array" ? [v] : { a: v };
  return v;
}

test.each(["array", "object"] as const)(
  "a %s nested 10,000 levels deep is a VALIDATION_ERROR naming the field; the queue keeps serving",
  async kind => {
    const serviceId = randomUUID();
    const err = await failure("add", { serviceId, value: deep(kind, 10_000) });
    expect(err.type).toBe("VALIDATION_ERROR");
    expect(err.code).toBe(422);
    expect(err.data).toMatchObject({ field: "value", limit: 64 });
    // At the limit it is accepted.
    await broker.call("worker.queue.add", { serviceId, value: deep(kind, 63) }, opts);
    expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toEqual(deep(kind, 63));
    for (const [action, field] of [
      ["update", "progress"],
      ["ack", "result"],
    ] as const) {
      const e = await failure(action, { serviceId, workerId: "w", [field]: deep(kind, 10_000) });
      expect(e.type).toBe("VALIDATION_ERROR");
      expect(e.data.field).toBe(field);
    }
    // Nothing changed: the worker still holds its task and can ack it.
    expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toEqual(deep(kind, 63));
    expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w", result: { ok: true } }, opts)).toBe(true);
  },
);

test.each(["add", "fetch", "ack"])("%s without an owner is an authorization error", async action => {
  const err = await failure(action, { serviceId: randomUUID(), workerId: "w", value: 1 }, { meta: {} });
  expect(err.type).toBe("OWNER_MISSING");
  expect(err.code).toBe(401);
});

test("the owner may also come in ctx.meta.acl.ownerId", async () => {
  const serviceId = randomUUID();
  const aclOpts = { meta: { acl: { ownerId: "owner-v" } } };
  expect(await broker.call("worker.queue.add", { serviceId, value: "via acl" }, aclOpts)).toBe(true);
  expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBe("via acl");
});
