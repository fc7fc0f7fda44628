/** G6 and takeover state: bounded partitions, bounded checkpoints, TTL on every row, retention, leases surviving a takeover. */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { defaultEngineOptions } from "../lib/queue/options";
import { migrateSchema } from "../lib/queue/schema";
import { MARKER_BASE } from "../lib/queue/store";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { owner, startQueueBroker, startQueueCluster } from "./helpers/queue-cluster";

let client: Client;
const keyspace = uniqueKeyspace("queue_storage");
const opts = owner("owner-s");

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

test("partitions stay bounded, a takeover replays only since the checkpoint, every row has a TTL, and leases survive a takeover", async () => {
  const bucketSize = 20;
  const engine = { bucketSize, checkpointEvents: 40 };
  const brokers = await startQueueCluster(2, { keyspace, client, engine });
  const [first, second] = brokers as [(typeof brokers)[0], (typeof brokers)[0]];
  try {
    const serviceId = randomUUID();
    const queue = `owner-s/${serviceId}`;
    for (let i = 0; i < 150; i++) await first.call("worker.queue.add", { serviceId, value: i }, opts);
    // A long-running task pins the oldest partition; the rest are processed.
    expect(await first.call("worker.queue.fetch", { serviceId, workerId: "slow", timeToRecover: 600 }, opts)).toBe(0);
    for (let i = 1; i < 150; i++) {
      expect(await first.call("worker.queue.fetch", { serviceId, workerId: "fast" }, opts)).toBe(i);
      expect(await first.call("worker.queue.ack", { serviceId, workerId: "fast" }, opts)).toBe(true);
    }

    // Retirement happens at rollovers: 50 more adds roll over twice more.
    for (let i = 150; i < 200; i++) await first.call("worker.queue.add", { serviceId, value: i }, opts);
    const partitions = await client.execute(`SELECT DISTINCT queue, range_id, bucket FROM ${keyspace}.queue_log`);
    const mine = partitions.rows.filter(r => r["queue"] === queue);
    expect(mine.length).toBeGreaterThan(10);
    for (const p of mine) {
      const rows = await client.execute(
        `SELECT pos, TTL(kind) AS event_ttl, TTL(evs) AS run_ttl, TTL(batch_end) AS marker_ttl FROM ${keyspace}.queue_log
         WHERE queue = ? AND range_id = ? AND bucket = ?`,
        [queue, p["range_id"], p["bucket"]],
        { prepare: true },
      );
      const events = rows.rows.filter(r => r["pos"] !== null && (r["pos"] as number) < MARKER_BASE);
      expect(events.length).toBeLessThanOrEqual(bucketSize);
      for (const r of events) {
        // An event row's or a run row's (events of one batch with the same TTL).
        const ttl = r["event_ttl"] ?? r["run_ttl"];
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(7 * 24 * 3600);
      }
      // Batch markers (above every event position): one per batch at most, kept for the retention.
      const markers = rows.rows.filter(
        r => (r["pos"] as number | null) !== null && (r["pos"] as number) >= MARKER_BASE,
      );
      expect(markers.length).toBeLessThanOrEqual(events.length);
      for (const r of markers) {
        expect(r["marker_ttl"]).toBeGreaterThan(0);
        expect(r["marker_ttl"]).toBeLessThanOrEqual(7 * 24 * 3600);
      }
    }
    const ownerRow = (
      await client.execute(`SELECT log_state, TTL(node) AS ttl FROM ${keyspace}.queue_owner WHERE queue = ?`, [queue], {
        prepare: true,
      })
    ).first();
    // A takeover replays from the last checkpoint: a partition or two, whatever the log holds behind it.
    const state = JSON.parse(ownerRow!["log_state"]) as { r: unknown[]; o: unknown[] };
    expect(state.r.length).toBeLessThanOrEqual(3);
    expect(state.o.length).toBeLessThanOrEqual(2);
    expect(ownerRow!["ttl"]).toBeGreaterThan(0);
    // Checkpoints overwrite two slots: their storage does not grow with the log.
    const slots = await client.execute(`SELECT DISTINCT queue, slot FROM ${keyspace}.queue_checkpoint`);
    expect(slots.rows.filter(r => r["queue"] === queue).length).toBeLessThanOrEqual(2);

    // Takeover: the slow worker keeps its task, nobody else gets it, the rest continue in order.
    await first.stop();
    expect(await second.call("worker.queue.fetch", { serviceId, workerId: "other" }, opts)).toBe(150);
    expect(await second.call("worker.queue.fetch", { serviceId, workerId: "slow" }, opts)).toBe(0);
    expect(await second.call("worker.queue.ack", { serviceId, workerId: "slow" }, opts)).toBe(true);
    expect(await second.call("worker.queue.ack", { serviceId, workerId: "other" }, opts)).toBe(true);
    const rest: unknown[] = [];
    for (;;) {
      const v = await second.call("worker.queue.fetch", { serviceId, workerId: "other" }, opts);
      if (v === null) break;
      rest.push(v);
      await second.call("worker.queue.ack", { serviceId, workerId: "other" }, opts);
    }
    expect(rest).toEqual(Array.from({ length: 49 }, (_, i) => 151 + i));
  } finally {
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
}, 120_000);

test("a task expires after the retention", async () => {
  const broker = await startQueueBroker("retention", {
    keyspace: `${keyspace}_r`,
    client,
    engine: { retentionSeconds: 2 },
  });
  try {
    const serviceId = randomUUID();
    await broker.call("worker.queue.add", { serviceId, value: "short-lived" }, opts);
    const ttl = await client.execute(`SELECT TTL(ev) AS ttl, TTL(evs) AS run_ttl FROM ${keyspace}_r.queue_log`);
    const ttls = ttl.rows.map(r => r["ttl"] ?? r["run_ttl"]).filter(t => t !== null);
    expect(ttls.length).toBeGreaterThan(0);
    expect(ttls.every(t => t <= 2)).toBe(true);
    await new Promise(r => setTimeout(r, 2500));
    expect(await broker.call("worker.queue.fetch", { serviceId, workerId: "w" }, opts)).toBeNull();
  } finally {
    await broker.stop();
    await dropKeyspace(client, `${keyspace}_r`);
  }
});

test("a node refuses a keyspace that a newer version migrated (its rows could be misread), with a CONFIGURATION_ERROR", async () => {
  const ks = uniqueKeyspace("queue_schema_newer");
  try {
    await migrateSchema(client, { ...defaultEngineOptions, keyspace: ks });
    // This version's own schema starts again with nothing to do.
    await migrateSchema(client, { ...defaultEngineOptions, keyspace: ks });
    await client.execute(
      `INSERT INTO ${ks}.schema_migrations (id, name, applied_at) VALUES (999, 'from the future', toTimestamp(now()))`,
    );
    await expect(migrateSchema(client, { ...defaultEngineOptions, keyspace: ks })).rejects.toMatchObject({
      type: "CONFIGURATION_ERROR",
      data: { setting: "QUEUE_KEYSPACE" },
      message: expect.stringContaining("schema 999"),
    });
    // And a queue node on it does not start.
    await expect(startQueueBroker("newer-schema", { keyspace: ks, client })).rejects.toMatchObject({
      type: "CONFIGURATION_ERROR",
    });
  } finally {
    await dropKeyspace(client, ks);
  }
});
