/**
 * The commit pipeline (docs/ARCHITECTURE.md, "Operations" and Invariant A'): several plain batches
 * of a queue in flight, committed in log order after a fence read. When one of them fails, the ones
 * after it may have landed, and the failed one may land later: a takeover records where the
 * partition's gap-free run of batches ends, and nobody reads past that end.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { migrateSchema } from "../lib/queue/schema";
import { defaultEngineOptions } from "../lib/queue/options";
import { queueKey } from "../lib/queue/queue-key";
import { INDEX_BATCH } from "../lib/queue/derived-writer";
import { IndexLookups } from "../lib/queue/index-lookups";
import { decodeLogState, MARKER_BASE, MAX_RUN_EVENTS, QueueStore } from "../lib/queue/store";
import { gapFreeEnd, takeOver } from "../lib/queue/takeover";
import { EventKind, position, type BucketRef, type LogEvent } from "../lib/queue/task";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { logRows } from "./helpers/log-rows";
import { owner, startQueueBroker } from "./helpers/queue-cluster";

let client: Client;
const keyspace = uniqueKeyspace("queue_pipeline");

beforeAll(async () => {
  client = await testClient();
  await migrateSchema(client, { ...defaultEngineOptions, keyspace });
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

const event = (n: number): LogEvent => ({
  kind: EventKind.Add,
  taskId: `t${n}`,
  seq: n,
  expiresAt: Date.now() + 3_600_000,
  value: { keyId: "k", blob: Buffer.from(String(n)) },
});

test("gapFreeEnd follows the batches from the start to the first hole", () => {
  expect(gapFreeEnd([], 0)).toBe(0);
  expect(gapFreeEnd([], 7)).toBe(7);
  expect(
    gapFreeEnd(
      [
        [4, 6],
        [0, 2],
        [2, 4],
        [8, 9],
      ],
      0,
    ),
  ).toBe(6);
  // From a checkpoint inside a batch; batches before it do not matter.
  expect(
    gapFreeEnd(
      [
        [3, 6],
        [6, 7],
      ],
      5,
    ),
  ).toBe(7);
  expect(gapFreeEnd([[0, 3]], 5)).toBe(5);
});

test("a partition's end, once recorded, hides the rows after it from every reader, also rows that land later", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `pipe/${randomUUID()}`;
  const ref: BucketRef = { range: 1, bucket: 0 };
  expect(await store.createBucket(queue, ref)).toBe(true);
  await store.appendEvents(queue, ref, 0, [event(0), event(1)]);
  // Batch [2, 4) never lands (yet); the one after it does.
  await store.appendEvents(queue, ref, 4, [event(4)]);
  expect(await store.isSealed(queue, ref)).toBe(false);
  await store.sealBucket(queue, ref);
  expect(await store.isSealed(queue, ref)).toBe(true);

  const tail = await store.readTail(queue, ref, 0);
  expect(tail.onePage).toBe(true);
  expect(tail.end).toBeNull();
  expect(tail.events.map(e => e.taskId)).toEqual(["t0", "t1", "t4"]);
  expect(tail.spans.sort((a, b) => a[0] - b[0])).toEqual([
    [0, 2],
    [4, 5],
  ]);
  const end = gapFreeEnd(tail.spans, 0);
  expect(end).toBe(2);
  expect(await store.setBucketEnd(queue, ref, end)).toBe(2);
  // The first recorded end stands.
  expect(await store.setBucketEnd(queue, ref, 5)).toBe(2);

  // The failed batch lands late.
  await store.appendEvents(queue, ref, 2, [event(2), event(3)]);

  const read = await store.readBucket(queue, ref, 0, 100);
  expect(read.events.map(e => e.taskId)).toEqual(["t0", "t1"]);
  expect(read.done).toBe(true);
  expect((await store.readBucket(queue, ref, 2, 100)).events).toEqual([]);
  expect((await store.readBucketAll(queue, ref)).map(e => e.taskId)).toEqual(["t0", "t1"]);
  expect((await store.readEvent(queue, position(1, 0, 1)))?.taskId).toBe("t1");
  expect(await store.readEvent(queue, position(1, 0, 2))).toBeNull();
  expect(await store.readEvent(queue, position(1, 0, 4))).toBeNull();
  expect((await store.readTail(queue, ref, 0)).end).toBe(2);
  // The rows are there: only the end hides them.
  expect((await logRows(client, keyspace, queue)).map(r => r.pos)).toEqual([0, 1, 2, 3, 4]);
});

test("rows written before version 2.2 (one column per field) are read beside compact ones", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `pipe/${randomUUID()}`;
  const ref: BucketRef = { range: 1, bucket: 0 };
  expect(await store.createBucket(queue, ref)).toBe(true);
  const expiresAt = Date.now() + 3_600_000;
  // What version 2.1 wrote for an add and a lease, with the batch's marker.
  const legacy = `INSERT INTO ${keyspace}.queue_log (queue, range_id, bucket, pos, kind, task_id, seq, key_id, value,
                  attempt, worker, lease_until, expires_at, src, flags) VALUES (?, 1, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;
  await client.execute(
    legacy,
    [queue, 0, EventKind.Add, "old", 1, "k", Buffer.from("v"), null, null, null, expiresAt, null, 2],
    { prepare: true },
  );
  await client.execute(
    legacy,
    [queue, 1, EventKind.Lease, "old", null, null, null, 1, "w", expiresAt - 1, expiresAt, position(1, 0, 0), 8],
    { prepare: true },
  );
  await client.execute(
    `INSERT INTO ${keyspace}.queue_log (queue, range_id, bucket, pos, batch_end) VALUES (?, 1, 0, ?, 2)`,
    [queue, MARKER_BASE],
    { prepare: true },
  );
  // This version goes on in the same partition.
  await store.appendEvents(queue, ref, 2, [event(2)]);

  const add = { kind: EventKind.Add, taskId: "old", seq: 1, value: { keyId: "k", blob: Buffer.from("v") }, expiresAt };
  const lease = { kind: EventKind.Lease, taskId: "old", attempt: 1, worker: "w", leaseUntil: expiresAt - 1, expiresAt };
  const tail = await store.readTail(queue, ref, 0);
  expect(tail.events).toMatchObject([add, { ...lease, src: position(1, 0, 0), flags: 8 }, { taskId: "t2", seq: 2 }]);
  expect(tail.spans.sort((a, b) => a[0] - b[0])).toEqual([
    [0, 2],
    [2, 3],
  ]);
  expect((await store.readBucket(queue, ref, 0, 10)).events.map(e => e.taskId)).toEqual(["old", "old", "t2"]);
  expect(await store.readEvent(queue, position(1, 0, 0))).toMatchObject(add);
  expect(await store.readEvent(queue, position(1, 0, 2))).toMatchObject({ taskId: "t2", value: event(2).value });
});

test("a batch's events with one TTL share a row (a run); every reader finds each event, from any position", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `pipe/${randomUUID()}`;
  const ref: BucketRef = { range: 1, bucket: 0 };
  expect(await store.createBucket(queue, ref)).toBe(true);
  const now = Date.now();
  // Whole seconds from now (TTLs are whole seconds): runs break where the TTL changes.
  const at = (n: number, ttlSeconds: number): LogEvent => ({ ...event(n), expiresAt: now + ttlSeconds * 1000 - 500 });
  const first = [at(0, 3600), at(1, 3600), at(2, 3600), at(3, 1800), at(4, 3600), at(5, 3600)];
  await store.appendEvents(queue, ref, 0, first);
  const second = Array.from({ length: MAX_RUN_EVENTS + 5 }, (_, i) => at(6 + i, 3600));
  await store.appendEvents(queue, ref, 6, second);
  const total = 6 + second.length;

  // Rows: [0, 3) [3] [4, 6), then [6, 6 + MAX_RUN_EVENTS) and the rest; each run row as long-lived as its events.
  const rows = await client.execute(
    `SELECT pos, TTL(evs) AS run_ttl, TTL(ev) AS ttl FROM ${keyspace}.queue_log
     WHERE queue = ? AND range_id = 1 AND bucket = 0 AND pos < ?`,
    [queue, MARKER_BASE],
    { prepare: true },
  );
  expect(rows.rows.map(r => r["pos"] as number)).toEqual([0, 3, 4, 6, 6 + MAX_RUN_EVENTS]);
  const ttls = rows.rows.map(r => (r["run_ttl"] ?? r["ttl"]) as number);
  expect(ttls[1]).toBeLessThanOrEqual(1800);
  for (const i of [0, 2, 3, 4]) {
    expect(ttls[i]).toBeGreaterThan(1800);
    expect(ttls[i]).toBeLessThanOrEqual(3600);
  }
  expect(rows.rows[1]!["run_ttl"]).toBeNull(); // a lone event is a row of its own

  const ids = (events: { taskId: string }[]) => events.map(e => e.taskId);
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `t${from + i}`);
  for (const from of [0, 1, 2, 3, 5, 7, 6 + MAX_RUN_EVENTS - 1, 6 + MAX_RUN_EVENTS, total - 1, total]) {
    expect(ids((await store.readTail(queue, ref, from)).events)).toEqual(range(from, total));
    expect(ids((await store.readBucket(queue, ref, from, 1000)).events)).toEqual(range(from, total));
    expect(ids(await store.readBucketAll(queue, ref, from))).toEqual(range(from, total));
  }
  // A page holds at most `limit` events, from inside a run or across runs.
  for (const [from, limit] of [
    [7, 1],
    [7, 3],
    [5, 4],
    [6 + MAX_RUN_EVENTS - 2, 4],
  ] as const) {
    const page = await store.readBucket(queue, ref, from, limit);
    expect(ids(page.events)).toEqual(range(from, from + limit));
    expect(page.done).toBe(false);
  }
  expect(await store.readBucket(queue, ref, total - 2, 5)).toMatchObject({ done: true });
  // A page says which runs it read; the next page from inside one, told where it starts, is one
  // statement (without the hint: a lookup of the run, then the slice).
  const firstPage = await store.readBucket(queue, ref, 6, 10);
  expect(firstPage.runs).toEqual([[6, 6 + MAX_RUN_EVENTS]]);
  const statements = jest.spyOn(client, "execute");
  try {
    const hinted = await store.readBucket(queue, ref, 16, 10, undefined, 6);
    expect(ids(hinted.events)).toEqual(range(16, 26));
    expect(statements).toHaveBeenCalledTimes(1);
    statements.mockClear();
    expect(ids((await store.readBucket(queue, ref, 16, 10)).events)).toEqual(range(16, 26));
    expect(statements).toHaveBeenCalledTimes(2);
  } finally {
    statements.mockRestore();
  }
  // Bounded reads stop inside a run.
  expect(ids((await store.readBucket(queue, ref, 1, 1000, 5)).events)).toEqual(range(1, 5));
  expect(ids((await store.readBucket(queue, ref, 7, 1000, 9)).events)).toEqual(range(7, 9));
  for (let pos = 0; pos < total; pos++) {
    expect((await store.readEvent(queue, position(1, 0, pos)))?.taskId).toBe(`t${pos}`);
  }
  expect(await store.readEvent(queue, position(1, 0, total))).toBeNull();
  // The test helper sees every event once, at its position.
  expect((await logRows(client, keyspace, queue)).map(r => r.pos)).toEqual(Array.from({ length: total }, (_, i) => i));

  // Rows of one event each: a page from a position is that many rows from there, whatever lies before.
  const singles = `pipe/${randomUUID()}`;
  expect(await store.createBucket(singles, ref)).toBe(true);
  for (let n = 0; n < 20; n++) await store.appendEvents(singles, ref, n, [at(n, n % 2 ? 3600 : 1800)]);
  expect(await store.readBucket(singles, ref, 17, 2)).toMatchObject({
    events: [{ taskId: "t17" }, { taskId: "t18" }],
    done: false,
  });

  // An end recorded inside a run hides the run's events from it on.
  await store.sealBucket(queue, ref);
  expect(await store.setBucketEnd(queue, ref, 8)).toBe(8);
  expect(ids((await store.readBucket(queue, ref, 0, 1000)).events)).toEqual(range(0, 8));
  expect(ids((await store.readBucket(queue, ref, 7, 1000)).events)).toEqual(range(7, 8));
  expect(await store.readEvent(queue, position(1, 0, 7))).toMatchObject({ taskId: "t7" });
  expect(await store.readEvent(queue, position(1, 0, 8))).toBeNull();
});

test("a page over runs asks Cassandra for the rows its events need, not for `limit` rows", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `pipe/${randomUUID()}`;
  const ref: BucketRef = { range: 1, bucket: 0 };
  expect(await store.createBucket(queue, ref)).toBe(true);
  // 40 runs of 100 events, then 30 events of a row each (single appends).
  for (let b = 0; b < 40; b++)
    await store.appendEvents(
      queue,
      ref,
      b * 100,
      Array.from({ length: 100 }, (_, i) => event(b * 100 + i)),
    );
  for (let n = 4000; n < 4030; n++) await store.appendEvents(queue, ref, n, [event(n)]);
  const ids = (events: { taskId: string }[]) => events.map(e => e.taskId);
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `t${from + i}`);
  const fetched = jest.spyOn(client, "execute");
  // Rows Cassandra sent for the requests since the last mockClear (not only those the page used).
  const rowsSent = async () => {
    let n = 0;
    for (const r of fetched.mock.results) n += ((await r.value) as { rows: unknown[] }).rows.length;
    fetched.mockClear();
    return n;
  };
  try {
    // Nothing known of the rows: the first request asks for a few, enough here for 300 events.
    fetched.mockClear();
    const cold = await store.readBucket(queue, ref, 0, 300);
    expect(ids(cold.events)).toEqual(range(0, 300));
    expect(await rowsSent()).toBeLessThanOrEqual(16);
    // Told the rows hold about 100 events: 300 events from inside a run take at most 5 rows.
    const warm = await store.readBucket(queue, ref, 250, 300, undefined, 200, undefined, 100);
    expect(ids(warm.events)).toEqual(range(250, 550));
    expect(await rowsSent()).toBeLessThanOrEqual(5);
    expect(warm.rows).toBeLessThanOrEqual(5);
    // A wrong estimate costs requests, never events: single rows read with a run's estimate.
    const sparse = await store.readBucket(queue, ref, 4000, 30, undefined, undefined, undefined, 100);
    expect(ids(sparse.events)).toEqual(range(4000, 4030));
    expect(sparse.rows).toBe(30);
    expect(fetched.mock.calls.length).toBeGreaterThan(1);
    // Every start and limit still gives exactly the events asked for, with or without an estimate.
    for (const [from, limit] of [
      [0, 1],
      [99, 2],
      [150, 1000],
      [3990, 25],
      [3999, 100],
    ] as const) {
      for (const estimate of [undefined, 1, 100]) {
        const page = await store.readBucket(queue, ref, from, limit, undefined, undefined, undefined, estimate);
        expect(ids(page.events)).toEqual(range(from, Math.min(from + limit, 4030)));
      }
    }
  } finally {
    fetched.mockRestore();
  }
  // A start in a gap after a run, then many single rows: later driver pages are larger than the
  // first (a query LIMIT reached by a page size made Cassandra start over: events came twice).
  const gap = `pipe/${randomUUID()}`;
  expect(await store.createBucket(gap, ref)).toBe(true);
  await store.appendEvents(
    gap,
    ref,
    0,
    Array.from({ length: 10 }, (_, i) => event(i)),
  );
  for (let n = 12; n < 400; n++) await store.appendEvents(gap, ref, n, [event(n)]);
  for (const estimate of [undefined, 1, 100]) {
    const page = await store.readBucket(gap, ref, 11, 300, undefined, undefined, undefined, estimate);
    expect(ids(page.events)).toEqual(range(12, 312));
  }
  const all = await store.readBucket(gap, ref, 5, 1000);
  expect(ids(all.events)).toEqual([...range(5, 10), ...range(12, 400)]);
  expect(all.done).toBe(true);
});

test("task_index entries written and read in groups: each row as written alone, an id without a row is null", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `o/${randomUUID()}`;
  const expiresAt = Date.now() + 3_600_000;
  const ids = Array.from({ length: INDEX_BATCH }, (_, i) => `g${i}`);
  await store.writeIndexes(
    queue,
    ids.map((taskId, i) => ({ taskId, seq: i, pos: 100 + i, clientId: i % 2 === 0, expiresAt, delivered: i === 3 })),
  );
  await store.writeIndex(queue, "alone", 9, 200, true, expiresAt);
  // Ids that are not plain ASCII: multi-byte, and one that is not well-formed text (a lone
  // surrogate, stored as U+FFFD): a grouped read finds them as the single-row read does.
  await store.writeIndexes(queue, [
    { taskId: "tâche-ü-😀", seq: 10, pos: 210, clientId: true, expiresAt },
    { taskId: "lone-\ud800", seq: 11, pos: 211, clientId: true, expiresAt },
  ]);
  // A hint that landed without its entry (no seq): not an entry.
  await store.writeHint(queue, "hint-only", { kind: "cancelled" }, 300, expiresAt);
  const asked = [...ids.slice(0, 5), "alone", "missing", "hint-only", "tâche-ü-😀", "lone-\ud800"];
  const got = await store.readIndexes(queue, asked);
  expect([...got.keys()].sort()).toEqual([...asked].sort());
  for (const id of asked) expect(got.get(id)).toEqual(await store.readIndex(queue, id));
  expect(got.get("g3")).toEqual({ seq: 3, pos: 103, clientId: false, hint: { kind: "delivered" } });
  expect(got.get("g2")).toEqual({ seq: 2, pos: 102, clientId: true, hint: { kind: "none" } });
  expect(got.get("alone")).toMatchObject({ seq: 9, pos: 200, clientId: true });
  expect(got.get("missing")).toBeNull();
  expect(got.get("hint-only")).toBeNull();
  expect(got.get("tâche-ü-😀")).toMatchObject({ seq: 10, pos: 210 });
  expect(got.get("lone-\ud800")).toMatchObject({ seq: 11, pos: 211 });
  // Through the grouping loader: ids asked in one turn share a request, answers are per id.
  const lookups = new IndexLookups(store, queue);
  const answers = await Promise.all(asked.map(id => lookups.read(id)));
  answers.forEach((a, i) => expect(a).toEqual(got.get(asked[i]!)));
});

test("a partition whose fence flag expired is sealed all the same", async () => {
  const store = new QueueStore(client, keyspace, 3600);
  const queue = `pipe/${randomUUID()}`;
  const ref: BucketRef = { range: 1, bucket: 0 };
  // An open partition whose flag outlived its TTL (here one second) while its rows live on.
  await client.execute(
    `INSERT INTO ${keyspace}.queue_log (queue, range_id, bucket, sealed) VALUES (?, 1, 0, false) USING TTL 1`,
    [queue],
    { prepare: true },
  );
  await store.appendEvents(queue, ref, 0, [event(0)]);
  const flag = async () =>
    (
      await client.execute(
        `SELECT sealed FROM ${keyspace}.queue_log WHERE queue = ? AND range_id = 1 AND bucket = 0 LIMIT 1`,
        [queue],
        { prepare: true },
      )
    ).first()?.["sealed"];
  while ((await flag()) !== null) await new Promise(r => setTimeout(r, 200));
  await store.sealBucket(queue, ref);
  expect(await flag()).toBe(true);
  expect((await store.readTail(queue, ref, 0)).events.map(e => e.taskId)).toEqual(["t0"]);
});

test("a batch that fails while later ones land, and then lands late: every task delivered exactly once", async () => {
  const serviceId = randomUUID();
  const opts = owner("owner-pipe");
  const queue = `owner-pipe/${serviceId}`;
  // Small batches and a small window: several batches in flight, and the window pages the log.
  const broker: ServiceBroker = await startQueueBroker("pipe-1", {
    keyspace,
    client,
    engine: { maxBatchEvents: 4, commitDepth: 4, windowMax: 4 },
  });
  const original = QueueStore.prototype.appendEvents;
  let held: { args: Parameters<QueueStore["appendEvents"]>; fail: (err: Error) => void } | undefined;
  let armed = false;
  let landedAfterHeld = 0;
  let releaseHeld: () => void = () => undefined;
  const heldReleased = new Promise<void>(r => (releaseHeld = r));
  try {
    for (let i = 0; i < 8; i++) await broker.call("worker.queue.add", { serviceId, value: { n: i } }, opts);

    QueueStore.prototype.appendEvents = function (this: QueueStore, ...args: Parameters<QueueStore["appendEvents"]>) {
      if (args[0] !== queue || !armed) return original.apply(this, args);
      if (!held) {
        // This batch "times out" without landing, once the batches written after it have landed.
        return new Promise<void>((_, reject) => {
          held = { args, fail: reject };
          void heldReleased.then(() => reject(new Error("write timed out (injected)")));
        });
      }
      return original.apply(this, args).then(() => {
        if (++landedAfterHeld === 3) releaseHeld();
      });
    };
    armed = true;
    const adds = Array.from({ length: 32 }, (_, i) =>
      broker.call("worker.queue.add", { serviceId, value: { n: 100 + i } }, opts),
    );
    // If fewer batches follow the held one, fail it anyway once the adds have all been written.
    const fallback = setTimeout(releaseHeld, 20_000);
    const results = await Promise.allSettled(adds);
    clearTimeout(fallback);
    armed = false;
    // The router retried what failed, on a new owner range: every add succeeded in the end.
    expect(results.filter(r => r.status === "rejected")).toEqual([]);
    expect(held).toBeDefined();
    expect(landedAfterHeld).toBeGreaterThanOrEqual(1);

    // The failed batch lands now, long after the takeover read its partition.
    const [q, ref, first, events] = held!.args;
    await original.call(new QueueStore(client, keyspace, 3600), q, ref, first, events);
    const row = await client.execute(
      `SELECT end_pos FROM ${keyspace}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ? LIMIT 1`,
      [queue, ref.range, ref.bucket],
      { prepare: true },
    );
    expect(row.first()?.["end_pos"]).toBe(first);
    const past = await client.execute(
      `SELECT pos FROM ${keyspace}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ? AND pos >= ? AND pos < ?`,
      [queue, ref.range, ref.bucket, first + events.length, MARKER_BASE],
      { prepare: true },
    );
    // Batches after the hole had landed too: the run really had rows past the end.
    expect(past.rowLength).toBeGreaterThan(0);

    // Drain: the window pages through the old partition (windowMax 4).
    const seen = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      const v = (await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)) as { n: number } | null;
      if (v === null || v === undefined) break;
      seen.set(v.n, (seen.get(v.n) ?? 0) + 1);
      expect(await broker.call("worker.queue.ack", { serviceId, workerId: "w" }, opts)).toBe(true);
    }
    const expected = [...Array.from({ length: 8 }, (_, i) => i), ...Array.from({ length: 32 }, (_, i) => 100 + i)];
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual(expected);
    expect([...seen.values()].every(n => n === 1)).toBe(true);
  } finally {
    QueueStore.prototype.appendEvents = original;
    await broker.stop();
  }
}, 120_000);

describe("the fence lease at a takeover", () => {
  const deps = (nodeId: string, fenceLeaseMs: number, store: QueueStore) => ({
    store,
    options: { ...defaultEngineOptions, keyspace, fenceLeaseMs },
    nodeId,
    isNodeAlive: () => false,
    hooks: () => ({ handover: () => undefined, handoversPending: () => undefined, notify: () => undefined }),
    onFailure: () => undefined,
    warn: () => undefined,
  });
  const lease = async (queue: string) =>
    decodeLogState((await new QueueStore(client, keyspace, 3600).readOwner(queue, true))!.stateText).fenceLeaseMs;

  test("an owner's lease is in its row; the next owner reads the log only twice that long after its seal", async () => {
    const store = new QueueStore(client, keyspace, 3600);
    const key = queueKey("pipe", randomUUID());
    const a = await takeOver(key, deps("node-a", 300, store));
    if (!("owned" in a)) throw new Error("node-a did not get the queue");
    expect(await lease(key.id)).toBe(300);

    // node-b takes it over (node-a is gone without releasing): from the end of its seals to its
    // first read of the log at least 600 ms pass, whatever the machine's speed.
    const spied = new QueueStore(client, keyspace, 3600);
    let sealedAt = 0;
    let readAt = 0;
    const seal = spied.sealBucket.bind(spied);
    spied.sealBucket = async (q, ref) => {
      await seal(q, ref);
      sealedAt = Math.max(sealedAt, performance.now());
    };
    const readTail = spied.readTail.bind(spied);
    spied.readTail = (q, ref, from, columns) => {
      readAt ||= performance.now();
      return readTail(q, ref, from, columns);
    };
    const b = await takeOver(key, deps("node-b", 0, spied));
    if (!("owned" in b)) throw new Error("node-b did not get the queue");
    a.owned.abandon("taken over");
    expect(sealedAt).toBeGreaterThan(0);
    expect(readAt - sealedAt).toBeGreaterThanOrEqual(600);
    // node-b has no lease of its own; once its first checkpoint is pointed at, none is recorded.
    await b.owned.release();
    expect(await lease(key.id)).toBeUndefined();
  });

  test("a graceful release clears the lease: the next owner has none to wait out", async () => {
    const store = new QueueStore(client, keyspace, 3600);
    const key = queueKey("pipe", randomUUID());
    const a = await takeOver(key, deps("node-a", 300, store));
    if (!("owned" in a)) throw new Error("node-a did not get the queue");
    await a.owned.release();
    expect(await lease(key.id)).toBeUndefined();
    const b = await takeOver(key, deps("node-b", 300, store));
    if (!("owned" in b)) throw new Error("node-b did not get the queue");
    expect(await lease(key.id)).toBe(300);
    await b.owned.release();
  });
});
