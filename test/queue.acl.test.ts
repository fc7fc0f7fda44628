/**
 * The ACL middleware in trust mode (ACL_TRUST_META: the owner named in meta is believed, as in
 * version 1; grants are tested in queue.grants.test.ts) in front of the real queue service (default codec: owner keys from the keys
 * service) on Cassandra: no action runs without an owner, one owner can never reach another owner's
 * queue even under the same serviceId (nor see it listed by `queues`), and the external ACL action
 * can refuse. "Every action" is the 16 guarded actions of worker.queue (all but health and shardExec).
 *
 * Two queue nodes (q1, q2) and a keys node share a namespace, with the middleware alone; a third,
 * standalone node ("guarded") runs the middleware with an `aclAction`, its own keys service on the
 * same table, and the ACL decider.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { AclMiddleware, type AclDecisionRequest } from "../middleware/acl.middleware";
import { createKeysService } from "../services/keys.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";
import { logRows } from "./helpers/log-rows";

const keyspace = uniqueKeyspace("queue_acl");
const namespace = `acl-${randomUUID().slice(0, 8)}`;
const masterKey = randomBytes(32);
const replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
const suffix = randomBytes(4).toString("hex");
const MALLORY = `mallory-${suffix}`;
const OPS = `ops-${suffix}`;

/** Every guarded action of worker.queue, with valid parameters for `serviceId`. */
function everyAction(serviceId: string): Record<string, object> {
  return {
    add: { serviceId, value: "v" },
    fetch: { serviceId, workerId: "w" },
    fetchTask: { serviceId, workerId: "w" },
    ack: { serviceId, workerId: "w" },
    ackTask: { serviceId, workerId: "w" },
    update: { serviceId, workerId: "w" },
    release: { serviceId, workerId: "w" },
    cancel: { serviceId, taskId: "t" },
    status: { serviceId, taskId: "t" },
    stats: { serviceId },
    dead: { serviceId },
    redrive: { serviceId },
    purge: { serviceId },
    tasks: { serviceId },
    inspect: { serviceId, taskId: "t" },
    queues: {},
  };
}

/** The ACL decider: refuses MALLORY everything and OPS purge; allows the rest. */
const decisions: (AclDecisionRequest & { metaOwner: unknown })[] = [];
const decider: ServiceSchema = {
  name: "acl",
  actions: {
    decide(ctx: Context<AclDecisionRequest, Record<string, unknown>>) {
      decisions.push({ ...ctx.params, metaOwner: ctx.meta.ownerId });
      const { ownerId, action } = ctx.params;
      if (ownerId === MALLORY) return { result: false };
      if (ownerId === OPS && action === "worker.queue.purge") return false;
      return true;
    },
  },
};

let client: Client;
let keysNode: ServiceBroker;
let q1: ServiceBroker;
let q2: ServiceBroker;
let guarded: ServiceBroker;

function call<T = any>(broker: ServiceBroker, action: string, params: object, meta?: object): Promise<T> {
  return broker.call(`worker.queue.${action}`, params, meta === undefined ? {} : { meta });
}

const as = (ownerId: string) => ({ ownerId });

/** The error a promise rejects with; fails the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    value => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

/**
 * Queues (`<owner>/<serviceId>`) of this serviceId that exist in Cassandra: in queue_owner,
 * queue_log or the owner's queue index (owner_queues).
 */
async function storedQueues(serviceId: string): Promise<string[]> {
  const queues = new Set<string>();
  for (const table of ["queue_owner", "queue_log"]) {
    const rs = await client.execute(`SELECT queue FROM ${keyspace}.${table}`, [], { fetchSize: 100_000 });
    for (const row of rs.rows) {
      const queue = row.get("queue") as string;
      if (queue.endsWith(`/${serviceId}`)) queues.add(queue);
    }
  }
  const index = await client.execute(`SELECT owner_id, service_id FROM ${keyspace}.owner_queues`, [], {
    fetchSize: 100_000,
  });
  for (const row of index.rows) {
    if (row.get("service_id") === serviceId) queues.add(`${row.get("owner_id") as string}/${serviceId}`);
  }
  return [...queues].sort();
}

beforeAll(async () => {
  client = await testClient();
  keysNode = new ServiceBroker({
    nodeID: "keys",
    namespace,
    transporter: "Fake",
    logger: false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
  });
  keysNode.createService(createKeysService({ client, keyspace, replication, masterKey, trustMeta: true }));
  await keysNode.start();
  const shared = { keyspace, client, defaultCodec: true } as const;
  q1 = await startQueueBroker("q1", { ...shared, namespace, middlewares: [AclMiddleware({ trustMeta: true })] });
  q2 = await startQueueBroker("q2", { ...shared, namespace, middlewares: [AclMiddleware({ trustMeta: true })] });
  await waitFor(() => [q1, q2].every(b => b.registry.nodes.list({}).filter(n => n.available).length === 3), 20_000);
  guarded = await startQueueBroker("guarded", {
    ...shared,
    middlewares: [AclMiddleware({ aclAction: "acl.decide" })],
    services: [createKeysService({ client, keyspace, masterKey }) as unknown as ServiceSchema, decider],
  });
});

afterAll(async () => {
  await Promise.all([q1, q2, guarded].filter(b => b?.started).map(b => b.stop()));
  await keysNode?.stop();
  await dropKeyspace(client, keyspace);
  await client.shutdown();
});

beforeEach(() => {
  decisions.length = 0;
});

test("every action without an owner is refused with OWNER_MISSING, and nothing is created", async () => {
  const serviceId = randomUUID();
  const noOwner = [undefined, { ownerId: "" }, { ownerId: 42 }, { acl: {} }, { acl: { ownerId: "" } }];
  for (const node of [q1, q2, guarded]) {
    for (const [action, params] of Object.entries(everyAction(serviceId))) {
      for (const meta of noOwner) {
        const err = await rejection(call(node, action, params, meta));
        expect({ action, meta, err }).toMatchObject({
          action,
          meta,
          err: { type: "OWNER_MISSING", code: 401, data: { action: `worker.queue.${action}` } },
        });
      }
    }
  }
  // Refused before the ACL action is asked, and before any queue is touched.
  expect(decisions).toEqual([]);
  expect(await storedQueues(serviceId)).toEqual([]);
});

test("owner A can never add to, fetch from, ack, update, release, cancel, inspect, list, purge or redrive B's queue", async () => {
  const A = `owner-a-${randomUUID()}`;
  const B = `owner-b-${randomUUID()}`;
  const serviceId = randomUUID(); // the same serviceId for both owners
  const secret = (n: number) => ({ v: `b-secret-${n}-${randomBytes(6).toString("hex")}` });

  // B's queue: one running task (with progress), one dead letter, two waiting tasks.
  const runningValue = secret(1);
  await call(q1, "add", { serviceId, taskId: "b-run", value: runningValue }, as(B));
  const running = await call(q1, "fetchTask", { serviceId, workerId: "wb", timeToRecover: 120 }, as(B));
  expect(running).toMatchObject({ taskId: "b-run", attempt: 1 });
  expect(await call(q1, "update", { serviceId, workerId: "wb", progress: { p: 1 } }, as(B))).toMatchObject({
    ok: true,
  });
  await call(q1, "add", { serviceId, taskId: "b-dead", value: secret(2), maxAttempts: 1 }, as(B));
  expect(await call(q1, "fetch", { serviceId, workerId: "wd" }, as(B))).toEqual(expect.any(Object));
  expect(await call(q1, "release", { serviceId, workerId: "wd", error: { e: "b failed" } }, as(B))).toBe(true);
  const waiting1 = secret(3);
  const waiting2 = secret(4);
  await call(q1, "add", { serviceId, taskId: "b1", value: waiting1 }, as(B));
  await call(q1, "add", { serviceId, taskId: "b2", value: waiting2 }, as(B));
  const bStats = async () => {
    const { ready, delayed, inFlight, dead, handingOver, workers } = await call(q2, "stats", { serviceId }, as(B));
    return { ready, delayed, inFlight, dead, handingOver, workers };
  };
  const before = await bStats();
  expect(before).toMatchObject({
    ready: 2,
    delayed: 0,
    inFlight: 1,
    dead: 1,
    handingOver: 0,
    workers: [expect.objectContaining({ workerId: "wb", taskId: "b-run", attempt: 1 })],
  });

  const emptyStats = { ready: 0, delayed: 0, inFlight: 0, dead: 0, handingOver: 0, workers: [] };
  // A, through either node, and also when the plain ownerId names B (the acl owner wins).
  for (const [node, meta] of [
    [q1, as(A)],
    [q2, as(A)],
    [q2, { ownerId: B, acl: { ownerId: A } }],
  ] as const) {
    expect(await call(node, "fetch", { serviceId, workerId: "wa" }, meta)).toBeNull();
    expect(await call(node, "fetchTask", { serviceId, workerId: "wb" }, meta)).toBeNull();
    expect(await call(node, "ack", { serviceId, workerId: "wb" }, meta)).toBe(false);
    expect(await call(node, "ack", { serviceId, workerId: "wb", taskId: "b-run", result: 1 }, meta)).toBe(false);
    expect(await call(node, "ackTask", { serviceId, workerId: "wb", taskId: "b-run" }, meta)).toEqual({
      ok: false,
      reason: "NO_TASK",
    });
    expect(
      await call(node, "update", { serviceId, workerId: "wb", taskId: "b-run", progress: { p: 2 } }, meta),
    ).toMatchObject({ ok: false, reason: "NO_TASK" });
    expect(await call(node, "release", { serviceId, workerId: "wb" }, meta)).toBe(false);
    expect(await call(node, "release", { serviceId, workerId: "wb", taskId: "b-run", error: "x" }, meta)).toBe(false);
    for (const taskId of ["b-run", "b1", "b-dead"]) {
      expect(await call(node, "cancel", { serviceId, taskId }, meta)).toEqual({ ok: false, state: "unknown", taskId });
      expect(await call(node, "status", { serviceId, taskId }, meta)).toEqual({ taskId, state: "unknown" });
    }
    expect(await call(node, "stats", { serviceId }, meta)).toMatchObject(emptyStats);
    expect(await call(node, "dead", { serviceId }, meta)).toEqual([]);
    expect(await call(node, "tasks", { serviceId }, meta)).toEqual({ total: 0, tasks: [] });
    for (const taskId of ["b-run", "b1", "b-dead"]) {
      expect(await call(node, "inspect", { serviceId, taskId }, meta)).toEqual({ taskId, state: "unknown" });
    }
    expect(await call(node, "queues", {}, meta)).toEqual([]);
    expect(await call(node, "redrive", { serviceId }, meta)).toEqual({ redriven: 0 });
    expect(await call(node, "redrive", { serviceId, taskIds: ["b-dead"] }, meta)).toEqual({ redriven: 0 });
    expect(await call(node, "purge", { serviceId }, meta)).toEqual({ purged: 0 });
  }
  // A's add, even with B's task id, lands in A's own queue.
  expect(await call(q2, "add", { serviceId, taskId: "b1", value: "from A" }, as(A))).toBe(true);
  expect(await call(q1, "fetchTask", { serviceId, workerId: "wa" }, as(A))).toMatchObject({
    taskId: "b1",
    value: "from A",
  });
  expect(await call(q1, "ack", { serviceId, workerId: "wa" }, as(A))).toBe(true);

  expect(await call(q2, "queues", {}, as(A))).toEqual([expect.objectContaining({ serviceId })]);

  // B's queue is untouched.
  expect(await bStats()).toEqual(before);
  expect(await call(q1, "tasks", { serviceId }, as(B))).toMatchObject({ total: 4 });
  expect(await call(q1, "inspect", { serviceId, taskId: "b-run" }, as(B))).toMatchObject({
    state: "leased",
    worker: "wb",
    value: runningValue,
    progress: { p: 1 },
  });
  expect(await call(q2, "status", { serviceId, taskId: "b1" }, as(B))).toMatchObject({ state: "waiting", attempt: 0 });
  expect(await call(q2, "fetchTask", { serviceId, workerId: "wb" }, as(B))).toMatchObject({
    taskId: "b-run",
    attempt: 1,
    value: runningValue,
  });
  expect(await call(q2, "dead", { serviceId }, as(B))).toEqual([
    expect.objectContaining({ taskId: "b-dead", reason: "MAX_ATTEMPTS", error: { e: "b failed" } }),
  ]);
  expect(await call(q2, "fetchTask", { serviceId, workerId: "w-new" }, as(B))).toMatchObject({
    taskId: "b1",
    attempt: 1,
    value: waiting1,
  });
  expect(await call(q1, "ackTask", { serviceId, workerId: "wb" }, as(B))).toEqual({ ok: true, taskId: "b-run" });
  expect(await call(q1, "ack", { serviceId, workerId: "w-new" }, as(B))).toBe(true);
  expect(await call(q1, "fetch", { serviceId, workerId: "w-new" }, as(B))).toEqual(waiting2);

  // Two queues, each sealed under its own owner's key.
  expect(await storedQueues(serviceId)).toEqual([`${A}/${serviceId}`, `${B}/${serviceId}`].sort());
  const keyOf = async (owner: string) =>
    (await keysNode.call<{ id: string }, object>("keys.getOek", { service: "worker.queue" }, { meta: as(owner) })).id;
  const rows = await logRows(client, keyspace);
  const keyIds = (owner: string) =>
    new Set(rows.filter(r => r.queue === `${owner}/${serviceId}` && r.get("key_id")).map(r => r.get("key_id")));
  expect([...keyIds(A)]).toEqual([await keyOf(A)]);
  expect([...keyIds(B)]).toEqual([await keyOf(B)]);
  expect(await keyOf(A)).not.toBe(await keyOf(B));
});

test("the ACL action refusing gives ACCESS_DENIED before the action runs", async () => {
  const serviceId = randomUUID();
  for (const [action, params] of Object.entries(everyAction(serviceId))) {
    for (const meta of [as(MALLORY), { acl: { ownerId: MALLORY } }, { ownerId: OPS, acl: { ownerId: MALLORY } }]) {
      const err = await rejection(call(guarded, action, params, meta));
      expect({ action, err }).toMatchObject({
        action,
        err: { type: "ACCESS_DENIED", code: 403, data: { action: `worker.queue.${action}`, ownerId: MALLORY } },
      });
    }
  }
  // Asked once per call, with the established owner, the action and the serviceId only.
  const actions = Object.keys(everyAction(serviceId));
  expect(decisions).toHaveLength(actions.length * 3);
  for (const d of decisions) {
    expect(d).toEqual({
      action: expect.stringMatching(/^worker\.queue\./),
      ownerId: MALLORY,
      params: d.action === "worker.queue.queues" ? {} : { serviceId },
      metaOwner: MALLORY,
    });
  }
  expect(new Set(decisions.map(d => d.action))).toEqual(new Set(actions.map(a => `worker.queue.${a}`)));
  // None of the refused calls reached the queue.
  expect(await storedQueues(serviceId)).toEqual([]);

  // An owner the ACL allows everything but purge: the refused purge removes nothing.
  const value = { v: `ops-${randomBytes(6).toString("hex")}` };
  expect(await call(guarded, "add", { serviceId, taskId: "o1", value }, as(OPS))).toBe(true);
  expect(await call(guarded, "add", { serviceId, taskId: "o2", value: 2 }, as(OPS))).toBe(true);
  expect(await rejection(call(guarded, "purge", { serviceId }, as(OPS)))).toMatchObject({
    type: "ACCESS_DENIED",
    data: { action: "worker.queue.purge", ownerId: OPS },
  });
  expect(await call(guarded, "stats", { serviceId }, as(OPS))).toMatchObject({ ready: 2 });
  expect(await call(guarded, "fetchTask", { serviceId, workerId: "w" }, as(OPS))).toMatchObject({
    taskId: "o1",
    value,
  });
  expect(await call(guarded, "ack", { serviceId, workerId: "w" }, as(OPS))).toBe(true);
  expect(await storedQueues(serviceId)).toEqual([`${OPS}/${serviceId}`]);
  // The decider saw no value, only the serviceId; it was asked for the owner's key lookups too (the
  // keys service is guarded as well), with no serviceId.
  const opsDecisions = decisions.filter(d => d.ownerId === OPS);
  expect(opsDecisions.some(d => d.action === "keys.getOek")).toBe(true);
  for (const d of opsDecisions) {
    expect(d.params).toEqual(d.action === "keys.getOek" ? { serviceId: undefined } : { serviceId });
  }
});

test("the internal forwarding action cannot be used to reach another owner's queue or from a non-queue node", async () => {
  const serviceId = randomUUID();
  const victim = { meta: { ownerId: `victim-${suffix}` } };
  await q1.call("worker.queue.add", { serviceId, value: "victim's" }, victim);
  const purge = { request: { op: "purge", ownerId: `victim-${suffix}`, serviceId } };
  // A request that does not name a queue properly is refused before anything else.
  await expect(
    q1.call("worker.queue.shardExec", { request: { op: "purge", queue: `victim-${suffix}/${serviceId}` } }, victim),
  ).rejects.toMatchObject({ type: "INVALID_PARAMETER" });
  // Another owner, from a queue node.
  await expect(q1.call("worker.queue.shardExec", purge, { meta: { ownerId: MALLORY } })).rejects.toMatchObject({
    type: "ACCESS_DENIED",
  });
  await expect(q1.call("worker.queue.shardExec", purge, {})).rejects.toMatchObject({ type: "OWNER_MISSING" });
  // The right owner, but from a node that runs no queue service.
  await expect(keysNode.call("worker.queue.shardExec", purge, victim)).rejects.toMatchObject({ type: "ACCESS_DENIED" });
  expect(await q2.call("worker.queue.stats", { serviceId }, victim)).toMatchObject({ ready: 1 });
});
