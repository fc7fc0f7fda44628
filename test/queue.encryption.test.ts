/**
 * Owner-key encryption at rest, through the whole queue: a keys service (random master key) on its
 * own node, queue nodes with the service's default codec (SodiumCodec through MoleculerKeyProvider)
 * and the ACL middleware, all on the real Cassandra. What lands in the tables, ciphertexts moved
 * between tasks, tampered key ids, a wrong master key, key rotation, and the keys service being away.
 *
 * The key provider caches keys per owner on each queue node (the current key for a minute), so every
 * test uses owners of its own, and a test that needs a node to ask the keys service again uses a node
 * that has not seen that owner yet.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Client, types } from "cassandra-driver";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { AclMiddleware } from "../middleware/acl.middleware";
import { createKeysService, type GetOekResult, type KeysServiceOptions } from "../services/keys.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { logRows as storedLogRows, rewriteEvent, type LogRow } from "./helpers/log-rows";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

const keyspace = uniqueKeyspace("queue_encryption");
const namespace = `enc-${randomUUID().slice(0, 8)}`;
const masterKey = randomBytes(32);
const replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
const KEY_ID = /^\d{1,15}-[0-9a-f]{16}$/;

interface Completed {
  token: unknown;
  result?: unknown;
  error?: unknown;
  meta: Record<string, unknown>;
}

/** What the workflow's activity service received, from any queue node. */
const completed: Completed[] = [];
const activity: ServiceSchema = {
  name: "flow.activity",
  actions: {
    completed(ctx: Context<{ token: unknown; result?: unknown; error?: unknown }, Record<string, unknown>>) {
      completed.push({ ...ctx.params, meta: { ...ctx.meta } });
      return true;
    },
  },
};

let client: Client;
/** The keys node currently running (undefined while the keys service is away). */
let keysNode: ServiceBroker | undefined;
/** Whether the running keys node is the ordinary one (right master key, default rotation). */
let keysNormal = false;
let q1: ServiceBroker;
let q2: ServiceBroker;
const brokers: ServiceBroker[] = [];
let nodeCount = 0;

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
const marker = (what: string) => `${what}-${randomBytes(8).toString("hex")}`;
const newOwner = () => `owner-${randomUUID()}`;

function queueNodes(): ServiceBroker[] {
  return brokers.filter(b => b.started && b !== keysNode);
}

async function startKeys(options: Partial<KeysServiceOptions> = {}): Promise<ServiceBroker> {
  const broker = new ServiceBroker({
    nodeID: `keys-${++nodeCount}`,
    namespace,
    transporter: "Fake",
    logger: false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
  });
  broker.createService(createKeysService({ client, keyspace, replication, masterKey, trustMeta: true, ...options }));
  await broker.start();
  keysNode = broker;
  keysNormal = Object.keys(options).length === 0;
  await waitFor(() => queueNodes().every(b => b.registry.actions.isAvailable("keys.getOek")), 20_000);
  return broker;
}

/** Stops the keys node and waits until no queue node sees `keys.getOek` any more. */
async function stopKeys(): Promise<void> {
  const node = keysNode;
  keysNode = undefined;
  keysNormal = false;
  await node?.stop();
  await waitFor(() => queueNodes().every(b => !b.registry.actions.isAvailable("keys.getOek")), 20_000);
}

/** A queue node with the default codec (no override) and the ACL middleware, in the shared namespace. */
async function startQueue(): Promise<ServiceBroker> {
  const broker = await startQueueBroker(`queue-${++nodeCount}`, {
    keyspace,
    client,
    namespace,
    defaultCodec: true,
    middlewares: [AclMiddleware({ trustMeta: true })],
    services: [activity],
  });
  brokers.push(broker);
  await waitFor(() => keysNode === undefined || broker.registry.actions.isAvailable("keys.getOek"), 20_000);
  return broker;
}

function call<T = any>(
  broker: ServiceBroker,
  action: string,
  params: object,
  ownerId: string,
  meta: object = {},
): Promise<T> {
  return broker.call(`worker.queue.${action}`, params, { meta: { ownerId, ...meta } });
}

/** The error a promise rejects with; fails the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    value => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

function currentKey(ownerId: string): Promise<GetOekResult> {
  if (!keysNode) throw new Error("no keys node");
  return keysNode.call("keys.getOek", { service: "worker.queue" }, { meta: { ownerId } });
}

async function scan(table: string): Promise<types.Row[]> {
  const out: types.Row[] = [];
  let pageState: string | undefined;
  do {
    const rs = await client.execute(`SELECT * FROM ${keyspace}.${table}`, [], { fetchSize: 1000, pageState });
    out.push(...rs.rows);
    pageState = rs.pageState ?? undefined;
  } while (pageState);
  return out;
}

async function logRows(queue: string): Promise<LogRow[]> {
  return storedLogRows(client, keyspace, queue);
}

/**
 * Every place, in every table of the keyspace, where one of `needles` shows: text needles as UTF-8
 * bytes inside blobs and as text in every other cell; byte needles inside blobs, and as base64 or hex
 * in every other cell.
 */
async function findInTables(needles: (string | Buffer)[]): Promise<string[]> {
  const tables = await client.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", [
    keyspace,
  ]);
  const found: string[] = [];
  let cells = 0;
  for (const tableRow of tables.rows) {
    const table = tableRow.get("table_name") as string;
    for (const row of await scan(table)) {
      for (const column of row.keys()) {
        const value: unknown = row.get(column);
        if (value === null || value === undefined) continue;
        cells++;
        for (const needle of needles) {
          const label = typeof needle === "string" ? needle : `<${needle.length} bytes>`;
          if (Buffer.isBuffer(value)) {
            if (value.includes(typeof needle === "string" ? Buffer.from(needle, "utf8") : needle)) {
              found.push(`${table}.${column}: ${label}`);
            }
            continue;
          }
          const text = typeof value === "string" ? value : JSON.stringify(value);
          const forms = typeof needle === "string" ? [needle] : [needle.toString("base64"), needle.toString("hex")];
          if (forms.some(f => text.includes(f))) found.push(`${table}.${column}: ${label}`);
        }
      }
    }
  }
  // The search itself must have looked at something.
  expect(cells).toBeGreaterThan(0);
  return found;
}

/** Stops `broker`, lets `tamper` change the stored rows, and starts a new queue node that reads them. */
async function restartAfter(broker: ServiceBroker, tamper: () => Promise<void>): Promise<ServiceBroker> {
  await broker.stop();
  await tamper();
  return startQueue();
}

/** Replaces the stored value's ciphertext or key id in one event (tampering at rest). */
async function setColumn(row: LogRow, column: "value" | "key_id", value: unknown): Promise<void> {
  await rewriteEvent(client, keyspace, row, e => {
    const sealed = e.value!;
    return {
      ...e,
      value: column === "value" ? { ...sealed, blob: value as Buffer } : { ...sealed, keyId: value as string },
    };
  });
}

/** The one row holding the task's value (the add event: the queue was never taken over since). */
async function valueRow(queue: string, taskId: string): Promise<LogRow> {
  const rows = (await logRows(queue)).filter(r => r.get("task_id") === taskId && r.get("value") !== null);
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

beforeAll(async () => {
  client = await testClient();
  await startKeys(); // creates the keyspace (replication option)
  q1 = await startQueue();
  q2 = await startQueue();
  await waitFor(() => q1.registry.nodes.list({}).filter(n => n.available).length === 3, 20_000);
});

afterEach(async () => {
  // A test that swapped the keys node (or failed while it was away) leaves the ordinary one behind.
  if (!keysNormal) {
    await stopKeys();
    await startKeys();
  }
});

afterAll(async () => {
  await Promise.all(queueNodes().map(b => b.stop()));
  await keysNode?.stop();
  await dropKeyspace(client, keyspace);
  await client.shutdown();
});

test("no value, token, result, progress, release error or cancellation is readable in any table", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  const m = {
    value: marker("VALUE"),
    token: marker("TOKEN"),
    progress: marker("PROGRESS"),
    result: marker("RESULT"),
    meta: marker("META"),
    ackError: marker("ACKERROR"),
    failedToken: marker("FAILEDTOKEN"),
    released: marker("RELEASED"),
    releaseError1: marker("RELEASEERROR"),
    releaseError2: marker("RELEASEERROR"),
    cancelToken: marker("CANCELTOKEN"),
  };

  // A task with a workflow token, progress and a result (with caller meta, sealed with the result).
  await call(q1, "add", { serviceId, taskId: "done", value: { secret: m.value }, token: { wf: m.token } }, owner);
  expect(await call(q1, "fetchTask", { serviceId, workerId: "w1" }, owner)).toMatchObject({
    taskId: "done",
    value: { secret: m.value },
  });
  expect(await call(q1, "update", { serviceId, workerId: "w1", progress: { step: m.progress } }, owner)).toMatchObject({
    ok: true,
    taskId: "done",
  });
  expect(
    await call(q2, "ack", { serviceId, workerId: "w1", result: { out: m.result } }, owner, { trace: m.meta }),
  ).toBe(true);

  // A task with a token whose worker reports an error.
  await call(q2, "add", { serviceId, taskId: "failed", value: "plain enough", token: { wf: m.failedToken } }, owner);
  expect(await call(q1, "fetch", { serviceId, workerId: "w2" }, owner)).toBe("plain enough");
  expect(await call(q1, "ack", { serviceId, workerId: "w2", error: { why: m.ackError } }, owner)).toBe(true);

  // A task released twice with an error, dead after its two attempts.
  await call(q1, "add", { serviceId, taskId: "released", value: { secret: m.released }, maxAttempts: 2 }, owner);
  for (const error of [m.releaseError1, m.releaseError2]) {
    expect(await call(q2, "fetch", { serviceId, workerId: "w3" }, owner)).toEqual({ secret: m.released });
    expect(await call(q2, "release", { serviceId, workerId: "w3", error: { why: error } }, owner)).toBe(true);
  }
  expect(await call(q1, "dead", { serviceId }, owner)).toEqual([
    expect.objectContaining({ taskId: "released", reason: "MAX_ATTEMPTS", error: { why: m.releaseError2 } }),
  ]);

  expect(await call(q2, "inspect", { serviceId, taskId: "released" }, owner)).toMatchObject({
    state: "dead",
    value: { secret: m.released },
    error: { why: m.releaseError2 },
  });

  // A waiting task with a token, cancelled: the workflow gets the (sealed) cancellation.
  await call(q1, "add", { serviceId, taskId: "cancelled", value: 1, token: { wf: m.cancelToken } }, owner);
  expect(await call(q2, "cancel", { serviceId, taskId: "cancelled" }, owner)).toMatchObject({ ok: true });

  // Everything came back intact through the codec.
  const byToken = (wf: string) => completed.find(c => (c.token as { wf?: string }).wf === wf);
  await waitFor(() => [m.token, m.failedToken, m.cancelToken].every(wf => byToken(wf) !== undefined), 20_000);
  expect(byToken(m.token)).toMatchObject({ result: { out: m.result }, meta: { trace: m.meta } });
  expect(byToken(m.failedToken)).toMatchObject({ error: { why: m.ackError } });
  expect(byToken(m.cancelToken)).toMatchObject({ error: { type: "TASK_CANCELLED" } });

  // Every sealed column was written, as an envelope under the owner's current key.
  const { id: keyId, key } = await currentKey(owner);
  expect(keyId).toMatch(KEY_ID);
  const rows = await logRows(`${owner}/${serviceId}`);
  const sealedColumns = [
    ["key_id", "value"],
    ["token_key_id", "wf_token"],
    ["progress_key_id", "progress"],
    ["result_key_id", "result"],
    ["error_key_id", "error"],
  ] as const;
  for (const [keyColumn, blobColumn] of sealedColumns) {
    const withBlob = rows.filter(r => r.get(blobColumn) !== null);
    expect({ blobColumn, rows: withBlob.length > 0 }).toEqual({ blobColumn, rows: true });
    for (const r of withBlob) {
      const blob = r.get(blobColumn) as Buffer;
      expect(blob[0]).toBe(1);
      expect(blob.length).toBeGreaterThanOrEqual(1 + 24 + 16);
      expect(r.get(keyColumn)).toBe(keyId);
    }
  }

  // No marker, no cancellation payload, and not the owner's key itself, anywhere in the keyspace.
  const rawKey = Buffer.from(key, "base64");
  expect(await findInTables([...Object.values(m), "TASK_CANCELLED", rawKey])).toEqual([]);
  // The search does find what is stored in the clear (so an empty result above means something).
  expect(await findInTables([serviceId, keyId])).not.toEqual([]);
});

test("ciphertexts swapped between two tasks fail to decrypt, come back after their lease, and end dead", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  const queue = `${owner}/${serviceId}`;
  const valueA = { secret: marker("A") };
  const valueB = { secret: marker("B") };
  const first = await startQueue();
  for (const [taskId, value] of [
    ["a", valueA],
    ["b", valueB],
    ["c", "intact"],
  ] as const) {
    await call(first, "add", { serviceId, taskId, value, maxAttempts: 2 }, owner);
  }

  const node = await restartAfter(first, async () => {
    const a = await valueRow(queue, "a");
    const b = await valueRow(queue, "b");
    const blobA = a.get("value") as Buffer;
    await setColumn(a, "value", b.get("value"));
    await setColumn(b, "value", blobA);
  });

  const ttr = 1;
  for (const [worker, taskId] of [
    ["w1", "a"],
    ["w2", "b"],
  ]) {
    const err = await rejection(call(node, "fetchTask", { serviceId, workerId: worker, timeToRecover: ttr }, owner));
    expect(err).toMatchObject({
      type: "DECRYPTION_FAILED",
      code: 500,
      data: { queue: serviceId, taskId, field: "value" },
    });
    expect(err.message).toContain(taskId);
    const shown = JSON.stringify({ message: err.message, data: err.data });
    expect(shown).not.toContain(valueA.secret);
    expect(shown).not.toContain(valueB.secret);
  }
  // The untouched task is fine.
  expect(await call(node, "fetchTask", { serviceId, workerId: "w3" }, owner)).toMatchObject({
    taskId: "c",
    value: "intact",
  });
  expect(await call(node, "ack", { serviceId, workerId: "w3" }, owner)).toBe(true);

  // Not dropped: leased (attempt 1) by the worker that could not read it, then back after the lease.
  expect(await call(node, "status", { serviceId, taskId: "a" }, owner)).toMatchObject({
    state: "leased",
    attempt: 1,
    worker: "w1",
  });
  expect(await call(node, "stats", { serviceId }, owner)).toMatchObject({ ready: 0, inFlight: 2, dead: 0 });
  expect(await call(node, "fetch", { serviceId, workerId: "other" }, owner)).toBeNull();
  await sleep(ttr * 1000 + 300);
  expect(await call(node, "status", { serviceId, taskId: "a" }, owner)).toMatchObject({ state: "waiting" });
  expect(await call(node, "stats", { serviceId }, owner)).toMatchObject({ ready: 2, inFlight: 0 });

  // Second attempt: still undecryptable, still named.
  for (const [worker, taskId] of [
    ["w1", "a"],
    ["w2", "b"],
  ]) {
    const err = await rejection(call(node, "fetchTask", { serviceId, workerId: worker, timeToRecover: ttr }, owner));
    expect(err).toMatchObject({ type: "DECRYPTION_FAILED", data: { taskId, field: "value" } });
    expect(await call(node, "status", { serviceId, taskId }, owner)).toMatchObject({ state: "leased", attempt: 2 });
  }

  // After maxAttempts (2) both are dead letters, not lost.
  await sleep(ttr * 1000 + 300);
  expect(await call(node, "fetch", { serviceId, workerId: "other" }, owner)).toBeNull();
  const dead = await call<{ taskId: string; reason: string; attempt: number }[]>(node, "dead", { serviceId }, owner);
  expect(dead.map(d => [d.taskId, d.reason, d.attempt])).toEqual([
    ["a", "MAX_ATTEMPTS", 2],
    ["b", "MAX_ATTEMPTS", 2],
  ]);
  expect(await call(node, "stats", { serviceId }, owner)).toMatchObject({ ready: 0, inFlight: 0, dead: 2 });
  await node.stop();
});

test("a tampered key id gives DECRYPTION_FAILED naming the task, not garbage", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  const queue = `${owner}/${serviceId}`;
  const other = await currentKey(newOwner());
  const first = await startQueue();
  await call(first, "add", { serviceId, taskId: "unknown-key", value: { secret: marker("K") } }, owner);
  await call(first, "add", { serviceId, taskId: "foreign-key", value: { secret: marker("F") } }, owner);
  await call(first, "add", { serviceId, taskId: "fine", value: "fine" }, owner);

  const node = await restartAfter(first, async () => {
    // A well-formed id that was never issued, and a real key id of another owner.
    await setColumn(await valueRow(queue, "unknown-key"), "key_id", "1-0123456789abcdef");
    await setColumn(await valueRow(queue, "foreign-key"), "key_id", other.id);
  });

  for (const [worker, taskId, keyId] of [
    ["w1", "unknown-key", "1-0123456789abcdef"],
    ["w2", "foreign-key", other.id],
  ] as const) {
    const err = await rejection(call(node, "fetchTask", { serviceId, workerId: worker }, owner));
    expect(err).toMatchObject({ type: "DECRYPTION_FAILED", data: { queue: serviceId, taskId, field: "value" } });
    expect(err.message).toContain(taskId);
    expect(err.data.reason).toContain(keyId);
    expect(await call(node, "status", { serviceId, taskId }, owner)).toMatchObject({ state: "leased" });
  }
  expect(await call(node, "fetch", { serviceId, workerId: "w3" }, owner)).toBe("fine");
  await node.stop();
});

test("a keys service with another master key gives a clear error, never garbage; the right one reads again", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  const value = { secret: marker("WRONGMASTER") };
  await call(q1, "add", { serviceId, taskId: "t", value }, owner); // sealed on q1; q2 has no key of this owner

  await stopKeys();
  await startKeys({ masterKey: randomBytes(32) });

  // Opening needs the key by id: it does not unwrap, and the error says so.
  const fetchErr = await rejection(call(q2, "fetchTask", { serviceId, workerId: "w" }, owner));
  expect(fetchErr).toMatchObject({ type: "KEYS_UNAVAILABLE", retryable: true, data: { ownerId: owner } });
  expect(fetchErr.message).toMatch(/does not unwrap with the configured master keys/);
  expect(JSON.stringify({ message: fetchErr.message, data: fetchErr.data })).not.toContain(value.secret);
  // Sealing needs the current key: the same.
  const addErr = await rejection(call(q2, "add", { serviceId, taskId: "u", value: "never stored" }, owner));
  expect(addErr).toMatchObject({ type: "KEYS_UNAVAILABLE", retryable: true });
  expect(addErr.message).toMatch(/does not unwrap with the configured master keys/);

  // The ordinary keys service back: the same worker gets the same task, intact; the failed add left nothing.
  await stopKeys();
  await startKeys();
  expect(await call(q2, "fetchTask", { serviceId, workerId: "w" }, owner)).toMatchObject({
    taskId: "t",
    attempt: 1,
    value,
  });
  expect(await call(q2, "status", { serviceId, taskId: "u" }, owner)).toEqual({ taskId: "u", state: "unknown" });
  expect(await call(q1, "ack", { serviceId, workerId: "w" }, owner)).toBe(true);
  expect(await call(q1, "stats", { serviceId }, owner)).toMatchObject({ ready: 0, inFlight: 0 });
});

test("tasks added before and after a key rotation both come back intact", async () => {
  // The keys service has no clock to inject: a one-second rotation period makes rotation happen.
  await stopKeys();
  const rotating = await startKeys({ rotationDays: 1 / 86_400, cacheTtlMs: 50 });
  const owner = newOwner();
  const serviceId = randomUUID();
  const before = { secret: marker("BEFORE") };
  const after = { secret: marker("AFTER") };

  await call(q1, "add", { serviceId, taskId: "before", value: before }, owner);
  const first = (await valueRow(`${owner}/${serviceId}`, "before")).get("key_id") as string;
  expect(first).toMatch(KEY_ID);
  let current = await currentKey(owner);
  const until = Date.now() + 20_000;
  while (current.id === first && Date.now() < until) {
    await sleep(100);
    current = await currentKey(owner);
  }
  expect(current.id).not.toBe(first);
  expect(rotating).toBe(keysNode);

  // q2 has never sealed for this owner (q1 keeps its current key cached for a minute).
  await call(q2, "add", { serviceId, taskId: "after", value: after }, owner);
  const second = (await valueRow(`${owner}/${serviceId}`, "after")).get("key_id") as string;
  expect(second).toMatch(KEY_ID);
  expect(second).not.toBe(first);

  // Each is opened by the node that has not cached its key: both keys come from the keys service by id.
  expect(await call(q2, "fetchTask", { serviceId, workerId: "w1" }, owner)).toMatchObject({
    taskId: "before",
    value: before,
  });
  expect(await call(q1, "fetchTask", { serviceId, workerId: "w2" }, owner)).toMatchObject({
    taskId: "after",
    value: after,
  });

  // And with the ordinary keys service (30-day rotation) on a fresh node: old key ids still resolve.
  await call(q1, "release", { serviceId, workerId: "w1" }, owner);
  await call(q1, "release", { serviceId, workerId: "w2" }, owner);
  await stopKeys();
  await startKeys();
  const fresh = await startQueue();
  expect(await call(fresh, "fetchTask", { serviceId, workerId: "w3" }, owner)).toMatchObject({
    taskId: "before",
    value: before,
  });
  expect(await call(fresh, "fetchTask", { serviceId, workerId: "w4" }, owner)).toMatchObject({
    taskId: "after",
    value: after,
  });
  await fresh.stop();
});

test("ackTask with next through a node that does not own the queue: the next task comes back opened", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  expect(await call(q1, "stats", { serviceId }, owner)).toMatchObject({ ready: 0 });
  const owns = (b: ServiceBroker) =>
    (b.getLocalService("worker.queue") as unknown as { engine: { ownedQueues(): string[] } }).engine
      .ownedQueues()
      .includes(`${owner}/${serviceId}`);
  const entry = owns(q1) ? q2 : q1;
  expect(owns(entry)).toBe(false);
  const first = { secret: marker("FIRST") };
  const second = { secret: marker("SECOND") };
  await call(entry, "add", { serviceId, taskId: "one", value: first }, owner);
  await call(entry, "add", { serviceId, taskId: "two", value: second }, owner);
  expect(await call(entry, "fetch", { serviceId, workerId: "w" }, owner)).toEqual(first);
  const acked = await call(
    entry,
    "ackTask",
    { serviceId, workerId: "w", taskId: "one", next: true, timeToRecover: 30 },
    owner,
  );
  expect(acked).toMatchObject({ ok: true, taskId: "one", next: { taskId: "two", attempt: 1, value: second } });
  expect(acked.next.leaseUntil).toBeGreaterThan(Date.now() + 20_000);
  expect(await call(entry, "status", { serviceId, taskId: "one" }, owner)).toMatchObject({ state: "done" });
  expect(await call(entry, "fetchTask", { serviceId, workerId: "w" }, owner)).toMatchObject({ taskId: "two" });
  expect(await call(entry, "ackTask", { serviceId, workerId: "w", taskId: "two", next: true }, owner)).toEqual({
    ok: true,
    taskId: "two",
    next: null,
  });
  // Without next, ackTask answers as before (no next field).
  expect(await call(entry, "ackTask", { serviceId, workerId: "w", taskId: "two" }, owner)).toEqual({
    ok: true,
    taskId: "two",
  });
});

test("ackTask with next against an owner of an older version (no next in its answer): the entry node fetches", async () => {
  const owner = newOwner();
  const serviceId = randomUUID();
  expect(await call(q1, "stats", { serviceId }, owner)).toMatchObject({ ready: 0 });
  const engineOf = (b: ServiceBroker) =>
    (b.getLocalService("worker.queue") as unknown as { engine: Record<string, any> }).engine;
  const owns = (b: ServiceBroker) => (engineOf(b).ownedQueues() as string[]).includes(`${owner}/${serviceId}`);
  const [entry, ownerNode] = owns(q1) ? [q2, q1] : [q1, q2];
  expect(owns(ownerNode)).toBe(true);
  // An owner that predates `next` ignores it: it acks and answers without the field.
  const ownerEngine = engineOf(ownerNode);
  const original = ownerEngine.executeForwarded as (request: Record<string, unknown>) => Promise<unknown>;
  const seen: unknown[] = [];
  ownerEngine.executeForwarded = (request: Record<string, unknown>) => {
    seen.push(request.next);
    const { next: _ignored, ...older } = request;
    return original.call(ownerEngine, older);
  };
  try {
    const second = { secret: marker("SECOND") };
    await call(entry, "add", { serviceId, taskId: "one", value: { n: 1 } }, owner);
    await call(entry, "add", { serviceId, taskId: "two", value: second }, owner);
    expect(await call(entry, "fetchTask", { serviceId, workerId: "w" }, owner)).toMatchObject({ taskId: "one" });
    const acked = await call(
      entry,
      "ackTask",
      { serviceId, workerId: "w", taskId: "one", next: true, timeToRecover: 30 },
      owner,
    );
    expect(acked).toMatchObject({ ok: true, taskId: "one", next: { taskId: "two", attempt: 1, value: second } });
    expect(seen).toContainEqual({ timeToRecoverMs: 30_000 });
    expect(await call(entry, "status", { serviceId, taskId: "one" }, owner)).toMatchObject({ state: "done" });
    // The fallback fetch leased "two" to the worker, as a next from the owner would have.
    expect(await call(entry, "fetchTask", { serviceId, workerId: "w" }, owner)).toMatchObject({ taskId: "two" });
    expect(await call(entry, "ackTask", { serviceId, workerId: "w", taskId: "two", next: true }, owner)).toEqual({
      ok: true,
      taskId: "two",
      next: null,
    });
  } finally {
    ownerEngine.executeForwarded = original;
  }
});

describe("with the keys service away", () => {
  test("add fails with a retryable KEYS_UNAVAILABLE and stores nothing", async () => {
    const owner = newOwner();
    const serviceId = randomUUID();
    await stopKeys();
    for (const node of [q1, q2]) {
      const err = await rejection(call(node, "add", { serviceId, taskId: "t", value: "v" }, owner));
      expect(err).toMatchObject({ type: "KEYS_UNAVAILABLE", code: 503, retryable: true, data: { ownerId: owner } });
    }
    // Nothing reached Cassandra: no log row, no owner row for this queue.
    const queue = `${owner}/${serviceId}`;
    expect((await scan("queue_log")).filter(r => r.get("queue") === queue)).toEqual([]);
    expect((await scan("queue_owner")).filter(r => r.get("queue") === queue)).toEqual([]);
    expect((await scan("owner_queues")).filter(r => r.get("owner_id") === owner)).toEqual([]);

    await startKeys();
    expect(await call(q1, "stats", { serviceId }, owner)).toMatchObject({ ready: 0, inFlight: 0, delayed: 0 });
    expect(await call(q1, "fetch", { serviceId, workerId: "w" }, owner)).toBeNull();
    // The retried add now goes through.
    expect(await call(q1, "add", { serviceId, taskId: "t", value: "v" }, owner)).toBe(true);
    expect(await call(q2, "fetch", { serviceId, workerId: "w" }, owner)).toBe("v");
  });

  test("fetch fails with a retryable error and the task stays with the worker until the keys are back", async () => {
    const owner = newOwner();
    const serviceId = randomUUID();
    const value = { secret: marker("FETCH") };
    await call(q1, "add", { serviceId, taskId: "t", value }, owner); // q2 has no key of this owner
    await stopKeys();

    const err = await rejection(call(q2, "fetchTask", { serviceId, workerId: "w", timeToRecover: 30 }, owner));
    expect(err).toMatchObject({ type: "KEYS_UNAVAILABLE", code: 503, retryable: true });
    expect(await call(q2, "status", { serviceId, taskId: "t" }, owner)).toMatchObject({
      state: "leased",
      worker: "w",
      attempt: 1,
    });
    // Nobody else gets it meanwhile.
    expect(await call(q1, "fetch", { serviceId, workerId: "other" }, owner)).toBeNull();

    await startKeys();
    expect(await call(q2, "fetchTask", { serviceId, workerId: "w" }, owner)).toMatchObject({
      taskId: "t",
      attempt: 1,
      value,
    });
    expect(await call(q2, "ack", { serviceId, workerId: "w" }, owner)).toBe(true);
  });

  test("an ack whose result cannot be sealed fails and keeps the task; the worker acks again later", async () => {
    const owner = newOwner();
    const serviceId = randomUUID();
    const token = { wf: marker("ACKTOKEN") };
    const result = { out: marker("ACKRESULT") };
    // The node an ack enters seals its result (only ciphertext is forwarded to the owner): let the
    // entry be the node that never sealed anything for this owner (it only opened the value, by
    // key id); placement decides which node owns the queue, so look it up and add through the owner.
    expect(await call(q2, "stats", { serviceId }, owner)).toMatchObject({ ready: 0 });
    const owns = (b: ServiceBroker) =>
      (b.getLocalService("worker.queue") as unknown as { engine: { ownedQueues(): string[] } }).engine
        .ownedQueues()
        .includes(`${owner}/${serviceId}`);
    const entry = owns(q2) ? q1 : q2;
    expect(owns(entry)).toBe(false);
    await call(entry === q1 ? q2 : q1, "add", { serviceId, taskId: "t", value: "work", token }, owner);
    expect(await call(entry, "fetch", { serviceId, workerId: "w" }, owner)).toBe("work");
    await stopKeys();

    for (const action of ["ack", "ackTask"]) {
      const err = await rejection(call(entry, action, { serviceId, workerId: "w", taskId: "t", result }, owner));
      expect(err).toMatchObject({ type: "KEYS_UNAVAILABLE", retryable: true });
    }
    expect(await call(entry, "status", { serviceId, taskId: "t" }, owner)).toMatchObject({
      state: "leased",
      worker: "w",
    });
    await sleep(300);
    expect(completed.filter(c => (c.token as { wf?: string }).wf === token.wf)).toEqual([]);

    await startKeys();
    expect(await call(entry, "ackTask", { serviceId, workerId: "w", taskId: "t", result }, owner)).toEqual({
      ok: true,
      taskId: "t",
    });
    await waitFor(() => completed.some(c => (c.token as { wf?: string }).wf === token.wf), 20_000);
    expect(completed.filter(c => (c.token as { wf?: string }).wf === token.wf)).toEqual([
      expect.objectContaining({ token, result }),
    ]);
    await waitFor(
      async () => (await call(entry, "status", { serviceId, taskId: "t" }, owner)).state === "done",
      20_000,
    );
  });
});
