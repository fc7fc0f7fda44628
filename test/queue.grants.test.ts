/**
 * Owners authenticated on the bus (docs/ARCHITECTURE.md, Security), over a real NATS: two queue
 * nodes (each with the keys service and the ACL middleware in grant mode, default encryption) and a
 * client node with no services, as a hostile process on the network would be. For every action,
 * called on each queue node: no grant, a forged grant, an expired grant, owner B's grant used for
 * owner A's queue, and meta spoofing are all refused with typed 401/403 errors, and A's queue is
 * unchanged. The forwarding action and the keys service refuse the same way; `health` gives counts
 * only without an operator grant. A NATS tap on the namespace sees no result, error or progress of
 * a forward between the two queue nodes, neither as text nor base64-encoded.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import { connect, type NatsConnection } from "nats";
import { mintAccessToken } from "../lib/http/access-token";
import { AclMiddleware } from "../middleware/acl.middleware";
import { createKeysService } from "../services/keys.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

const NATS = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const keyspace = uniqueKeyspace("queue_grants");
const namespace = `grants-${randomUUID().slice(0, 8)}`;
const secret = randomBytes(32).toString("base64");
const masterKey = randomBytes(32);
const replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
const A = `owner-a-${randomUUID().slice(0, 8)}`;
const B = `owner-b-${randomUUID().slice(0, 8)}`;

let client: Client;
let q1: ServiceBroker;
let q2: ServiceBroker;
let intruder: ServiceBroker;
let tap: NatsConnection;
const packets: { subject: string; data: string }[] = [];

const grant = (ownerId: string, o: { expiresInSeconds?: number; ops?: boolean; services?: "*" | string[] } = {}) =>
  mintAccessToken({ secret, ownerId, services: o.services ?? "*", ...o });

/** Every guarded action of worker.queue, with valid parameters for `serviceId`. */
function everyAction(serviceId: string): Record<string, object> {
  return {
    add: { serviceId, value: "intruder" },
    fetch: { serviceId, workerId: "w" },
    fetchTask: { serviceId, workerId: "w" },
    ack: { serviceId, workerId: "w", result: "forged" },
    ackTask: { serviceId, workerId: "w" },
    update: { serviceId, workerId: "w", progress: 1 },
    release: { serviceId, workerId: "w" },
    cancel: { serviceId, taskId: "a-1" },
    status: { serviceId, taskId: "a-1" },
    stats: { serviceId },
    dead: { serviceId },
    redrive: { serviceId },
    purge: { serviceId },
    tasks: { serviceId },
    inspect: { serviceId, taskId: "a-1" },
    queues: {},
  };
}

function queueNode(name: string): Promise<ServiceBroker> {
  return startQueueBroker(name, {
    keyspace,
    client,
    namespace,
    transporter: NATS,
    defaultCodec: true,
    middlewares: [AclMiddleware({ grants: { secret } })],
    services: [createKeysService({ client, keyspace, replication, masterKey }) as unknown as ServiceSchema],
  });
}

async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    value => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

/** What A's queue holds, read with A's own grant. */
async function stateOfA(serviceId: string) {
  const meta = { grant: await grant(A) };
  const stats = await intruder.call<any, object>("worker.queue.stats", { serviceId }, { meta });
  const tasks = await intruder.call<any, object>("worker.queue.tasks", { serviceId }, { meta });
  const inspected = await intruder.call<any, object>("worker.queue.inspect", { serviceId, taskId: "a-1" }, { meta });
  return {
    counts: { ready: stats.ready, inFlight: stats.inFlight, dead: stats.dead, workers: stats.workers },
    tasks: tasks.tasks.map((t: any) => [t.taskId, t.state, t.attempt]),
    inspected: { state: inspected.state, value: inspected.value, progress: inspected.progress },
  };
}

beforeAll(async () => {
  client = await testClient();
  tap = await connect({ servers: NATS.replace(/^nats:\/\//, "") });
  const sub = tap.subscribe(`MOL-${namespace}.>`);
  void (async () => {
    for await (const m of sub) packets.push({ subject: m.subject, data: Buffer.from(m.data).toString("utf8") });
  })();
  q1 = await queueNode("grants-q1");
  q2 = await queueNode("grants-q2");
  intruder = new ServiceBroker({
    nodeID: "grants-client",
    namespace,
    transporter: { type: "NATS", options: { url: NATS } },
    logger: false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
  });
  await intruder.start();
  await waitFor(
    () => [q1, q2, intruder].every(b => b.registry.nodes.list({}).filter(n => n.available).length === 3),
    20_000,
  );
  await waitFor(() => intruder.registry.actions.isAvailable("worker.queue.add"), 20_000);
}, 60_000);

afterAll(async () => {
  await Promise.all([q1, q2, intruder].filter(b => b?.started).map(b => b.stop()));
  await tap?.close();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

test("no grant, a forged, an expired or another owner's grant, and meta spoofing: every action refused on both nodes, A's queue unchanged", async () => {
  const serviceId = randomUUID();
  const aMeta = { grant: await grant(A) };
  await intruder.call("worker.queue.add", { serviceId, taskId: "a-1", value: { secret: "a-1" } }, { meta: aMeta });
  await intruder.call("worker.queue.add", { serviceId, taskId: "a-2", value: { secret: "a-2" } }, { meta: aMeta });
  expect(
    await intruder.call("worker.queue.fetchTask", { serviceId, workerId: "wa", timeToRecover: 300 }, { meta: aMeta }),
  ).toMatchObject({ taskId: "a-1", value: { secret: "a-1" } });
  await intruder.call("worker.queue.update", { serviceId, workerId: "wa", progress: { p: 1 } }, { meta: aMeta });
  const before = await stateOfA(serviceId);
  expect(before).toMatchObject({
    counts: { ready: 1, inFlight: 1, dead: 0 },
    inspected: { state: "leased", value: { secret: "a-1" }, progress: { p: 1 } },
  });

  const forged = await mintAccessToken({ secret: randomBytes(32).toString("base64"), ownerId: A, services: "*" });
  const [header, payload] = (await grant(B)).split(".");
  const tampered = `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, "base64url").toString()), sub: A })).toString("base64url")}.${(await grant(B)).split(".")[2]}`;
  const expired = await grant(A, { expiresInSeconds: -60 });
  const bGrant = await grant(B);
  const narrow = await grant(A, { services: [randomUUID()] });
  const attacks: [string, Record<string, unknown>, string][] = [
    ["no grant", {}, "GRANT_REQUIRED"],
    ["meta ownerId", { ownerId: A }, "GRANT_REQUIRED"],
    ["meta acl.ownerId", { acl: { ownerId: A } }, "GRANT_REQUIRED"],
    ["forged signature", { grant: forged }, "INVALID_TOKEN"],
    ["B's token with sub changed to A", { grant: tampered }, "INVALID_TOKEN"],
    ["expired", { grant: expired }, "TOKEN_EXPIRED"],
    ["B's grant naming A", { grant: bGrant, ownerId: A }, "OWNER_NOT_ALLOWED"],
    ["B's grant naming A in acl", { grant: bGrant, acl: { ownerId: A } }, "OWNER_NOT_ALLOWED"],
  ];
  const seen: string[] = [];
  for (const node of [q1, q2]) {
    for (const [action, params] of Object.entries(everyAction(serviceId))) {
      for (const [name, meta, type] of attacks) {
        const err = await rejection(intruder.call(`worker.queue.${action}`, params, { meta, nodeID: node.nodeID }));
        expect({ node: node.nodeID, action, name, type: err.type, code: err.code }).toEqual({
          node: node.nodeID,
          action,
          name,
          type,
          code: type === "OWNER_NOT_ALLOWED" ? 403 : 401,
        });
        seen.push(JSON.stringify(err));
      }
      // A grant of A for other queues only.
      if (action !== "queues") {
        const err = await rejection(
          intruder.call(`worker.queue.${action}`, params, { meta: { grant: narrow }, nodeID: node.nodeID }),
        );
        expect({ action, type: err.type, code: err.code }).toEqual({ action, type: "SERVICE_NOT_ALLOWED", code: 403 });
      }
    }
  }
  // No refusal quotes a token or a value of A.
  for (const text of seen) {
    expect(text).not.toContain(forged);
    expect(text).not.toContain('a-1"}');
  }

  // B's grant alone reaches B's queue of the same serviceId: empty, and nothing of A's.
  const bMeta = { grant: bGrant };
  expect(await intruder.call("worker.queue.stats", { serviceId }, { meta: bMeta })).toMatchObject({
    ready: 0,
    inFlight: 0,
    workers: [],
  });
  expect(await intruder.call("worker.queue.fetch", { serviceId, workerId: "wb" }, { meta: bMeta })).toBeNull();
  expect(await intruder.call("worker.queue.inspect", { serviceId, taskId: "a-1" }, { meta: bMeta })).toMatchObject({
    state: "unknown",
  });
  expect(await intruder.call("worker.queue.queues", {}, { meta: bMeta })).toEqual([]);

  expect(await stateOfA(serviceId)).toEqual(before);
}, 120_000);

test("the forwarding action and the keys service refuse the same way; the owner's key needs the owner's grant", async () => {
  const serviceId = randomUUID();
  const request = { op: "stats", ownerId: A, serviceId };
  for (const node of [q1, q2]) {
    const call = (action: string, params: object, meta: object) =>
      rejection(intruder.call(action, params, { meta, nodeID: node.nodeID }));
    expect(await call("worker.queue.shardExec", { request }, { ownerId: A })).toMatchObject({ type: "GRANT_REQUIRED" });
    expect(await call("worker.queue.shardExec", { request }, { grant: await grant(B) })).toMatchObject({
      type: "ACCESS_DENIED",
    });
    expect(await call("keys.getOek", { service: "worker.queue" }, { ownerId: A })).toMatchObject({
      type: "GRANT_REQUIRED",
    });
    expect(
      await call("keys.getOek", { service: "worker.queue" }, { grant: await grant(A, { expiresInSeconds: -60 }) }),
    ).toMatchObject({
      type: "TOKEN_EXPIRED",
    });
    expect(await call("keys.getOek", { service: "worker.queue" }, { grant: await grant(B), ownerId: A })).toMatchObject(
      {
        type: "OWNER_NOT_ALLOWED",
      },
    );
  }
  // With A's grant, A's key (the same on both nodes).
  const keys = await Promise.all(
    [q1, q2].map(node =>
      grant(A).then(g =>
        intruder.call<{ id: string; key: string }, object>(
          "keys.getOek",
          { service: "worker.queue" },
          { meta: { grant: g }, nodeID: node.nodeID },
        ),
      ),
    ),
  );
  expect(keys[0]).toEqual(keys[1]);
});

test("health gives counts to anyone, and which queues only to an operator grant", async () => {
  const serviceId = randomUUID();
  await intruder.call("worker.queue.add", { serviceId, value: 1 }, { meta: { grant: await grant(A) } });
  for (const node of [q1, q2]) {
    const anyone = await intruder.call<Record<string, unknown>, object>(
      "worker.queue.health",
      {},
      { nodeID: node.nodeID },
    );
    expect(Object.keys(anyone).sort()).toEqual(["cassandra", "latencyMs", "nodeId", "ownedQueueCount"]);
    const forged = await intruder.call<Record<string, unknown>, object>(
      "worker.queue.health",
      {},
      { nodeID: node.nodeID, meta: { grant: "forged.grant.token" } },
    );
    expect(forged.ownedQueues).toBeUndefined();
    const notOps = await intruder.call<Record<string, unknown>, object>(
      "worker.queue.health",
      {},
      { nodeID: node.nodeID, meta: { grant: await grant(A) } },
    );
    expect(notOps.ownedQueues).toBeUndefined();
  }
  const details = await Promise.all(
    [q1, q2].map(async node =>
      intruder.call<{ ownedQueues: string[]; ownedQueueCount: number }, object>(
        "worker.queue.health",
        {},
        { nodeID: node.nodeID, meta: { grant: await grant("operator", { ops: true }) } },
      ),
    ),
  );
  expect(details.flatMap(d => d.ownedQueues)).toContain(`${A}/${serviceId}`);
  for (const d of details) expect(d.ownedQueues).toHaveLength(d.ownedQueueCount);
});

test("a NATS tap sees no result, error or progress in a forward between the queue nodes", async () => {
  const serviceId = randomUUID();
  const meta = { grant: await grant(A) };
  // Whichever node owns the queue, calls enter through the other one and are forwarded.
  await intruder.call("worker.queue.add", { serviceId, taskId: "t", value: "v", token: { wf: 1 } }, { meta });
  const owner = (
    await Promise.all(
      [q1, q2].map(async node => {
        const h = await intruder.call<{ ownedQueues: string[] }, object>(
          "worker.queue.health",
          {},
          { nodeID: node.nodeID, meta: { grant: await grant("operator", { ops: true }) } },
        );
        return h.ownedQueues.includes(`${A}/${serviceId}`) ? node : undefined;
      }),
    )
  ).find(Boolean)!;
  const entry = owner === q1 ? q2 : q1;
  const marker = (what: string) => `${what}-${randomBytes(8).toString("hex")}`;
  const progress = marker("PROGRESS");
  const releaseError = marker("RELEASEERROR");
  const result = marker("RESULT");
  const ackError = marker("ACKERROR");
  const via = { meta, nodeID: entry.nodeID };
  const from = packets.length;

  expect(await intruder.call("worker.queue.fetch", { serviceId, workerId: "w" }, via)).toBe("v");
  expect(
    await intruder.call("worker.queue.update", { serviceId, workerId: "w", progress: { progress } }, via),
  ).toMatchObject({ ok: true });
  expect(await intruder.call<any, object>("worker.queue.status", { serviceId, taskId: "t" }, via)).toMatchObject({
    progress: { progress },
  });
  expect(await intruder.call("worker.queue.release", { serviceId, workerId: "w", error: { releaseError } }, via)).toBe(
    true,
  );
  expect(await intruder.call<any, object>("worker.queue.inspect", { serviceId, taskId: "t" }, via)).toMatchObject({
    error: { releaseError },
  });
  expect(await intruder.call("worker.queue.fetch", { serviceId, workerId: "w" }, via)).toBe("v");
  expect(await intruder.call("worker.queue.ack", { serviceId, workerId: "w", result: { result } }, via)).toBe(true);
  await intruder.call("worker.queue.add", { serviceId, taskId: "t2", value: "v2", token: { wf: 2 } }, via);
  expect(await intruder.call("worker.queue.fetch", { serviceId, workerId: "w2" }, via)).toBe("v2");
  expect(
    await intruder.call("worker.queue.ack", { serviceId, workerId: "w2", taskId: "t2", error: { ackError } }, via),
  ).toBe(true);
  await new Promise(r => setTimeout(r, 200)); // the tap's last packets

  const between = packets
    .slice(from)
    .filter(
      p =>
        p.subject !== `MOL-${namespace}.REQ.${entry.nodeID}` && p.subject !== `MOL-${namespace}.RES.${intruder.nodeID}`,
    );
  const forwards = between.filter(
    p => p.subject === `MOL-${namespace}.REQ.${owner.nodeID}` && p.data.includes("shardExec"),
  );
  expect(forwards.length).toBeGreaterThanOrEqual(7);
  const markers = [progress, releaseError, result, ackError];
  for (const p of between) {
    const decoded = (p.data.match(/[A-Za-z0-9+/]{16,}={0,2}/g) ?? []).map(s =>
      Buffer.from(s, "base64").toString("latin1"),
    );
    for (const text of [p.data, ...decoded]) {
      for (const m of markers)
        expect({ subject: p.subject, leaked: text.includes(m) }).toEqual({ subject: p.subject, leaked: false });
    }
  }
  // The client's own requests to the entry node did carry them (the tap works).
  const toEntry = packets.slice(from).filter(p => p.subject === `MOL-${namespace}.REQ.${entry.nodeID}`);
  expect(toEntry.some(p => p.data.includes(result))).toBe(true);
}, 60_000);

test("forged beats and node events from another node change nothing: q1 stays alive for q2", async () => {
  const alive = () =>
    (
      q2.getLocalService("worker.queue") as unknown as { engine: { membership: { isAlive(id: string): boolean } } }
    ).engine.membership.isAlive(q1.nodeID);
  expect(alive()).toBe(true);
  // A beat that claims to come from q1 saying it leaves, and a remote "$node.disconnected" about q1.
  await intruder.broadcast("worker.queue.node.beat", { nodeId: q1.nodeID, owned: 0, leaving: true });
  await intruder.broadcast("$node.disconnected", { node: { id: q1.nodeID } });
  // Packets from one connection arrive in order: once q2 answered this call, it had both events.
  await intruder.call("worker.queue.health", {}, { nodeID: q2.nodeID });
  expect(alive()).toBe(true);
});

test("a forwarded request must name its queue properly, whoever sent it", async () => {
  const g = await grant(A);
  for (const request of [
    { op: "stats", ownerId: A, serviceId: `x/${randomUUID()}` },
    { op: "fetch", ownerId: A, serviceId: randomUUID(), worker: "w", timeToRecoverMs: 1000, waitMs: 10 ** 9 },
    // An ack with next whose lease would never end, has none, or names no task.
    {
      op: "ack",
      ownerId: A,
      serviceId: randomUUID(),
      worker: "w",
      taskId: "t",
      failed: false,
      next: { timeToRecoverMs: 1e15 },
    },
    { op: "ack", ownerId: A, serviceId: randomUUID(), worker: "w", taskId: "t", failed: false, next: {} },
    { op: "ack", ownerId: A, serviceId: randomUUID(), worker: "w", failed: false, next: { timeToRecoverMs: 1000 } },
  ]) {
    const err = await rejection(
      intruder.call("worker.queue.shardExec", { request }, { meta: { grant: g }, nodeID: q1.nodeID }),
    );
    expect(err).toMatchObject({ type: "INVALID_PARAMETER", code: 422 });
  }
});
