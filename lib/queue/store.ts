/**
 * Every CQL statement of the queue, and nothing else: no decisions live here. Statements are
 * prepared; consistency LOCAL_QUORUM, serial consistency LOCAL_SERIAL, set on each call.
 */
import { types, type Client } from "cassandra-driver";
import type { Sealed } from "../codec";
import { OwnershipLostError } from "../errors";
import { EventKind, type LogEvent } from "./task";

const { consistencies } = types;

/** A log partition: (queue, range_id, bucket). */
export interface BucketRef {
  range: number;
  bucket: number;
}

export interface OwnerRow {
  rangeId: number;
  node: string;
  leaseUntil: number;
  buckets: BucketRef[];
}

export interface StoredEvent extends LogEvent {
  pos: number;
}

/** Serial consistency of every condition: LOCAL_SERIAL when all queue nodes share one data center, else SERIAL. */
export type SerialScope = "local" | "global";

/** The owner row outlives every task written while it was owned (renewals are at most ownerLeaseMs apart). */
const OWNER_ROW_MARGIN_SECONDS = 86_400;

function long(n: number): types.Long {
  return types.Long.fromNumber(n);
}

function optLong(n: number | undefined): types.Long | undefined {
  return n === undefined ? undefined : long(n);
}

/** The columns of an event row, in the order appendFenced binds them. */
const EVENT_COLUMNS = [
  "queue",
  "range_id",
  "bucket",
  "pos",
  "kind",
  "task_id",
  "seq",
  "client_id",
  "key_id",
  "value",
  "token_key_id",
  "wf_token",
  "attempt",
  "max_attempts",
  "state",
  "not_before",
  "worker",
  "lease_until",
  "ttr",
  "lease_start",
  "expires_at",
  "progress_key_id",
  "progress",
  "error_key_id",
  "error",
  "reason",
  "cancelled",
  "result_key_id",
  "result",
];

function num(v: unknown): number | undefined {
  if (v === null || v === undefined) return undefined;
  if (v instanceof types.Long) return v.toNumber();
  return Number(v);
}

function sealedOf(keyId: unknown, blob: unknown): Sealed | undefined {
  if (typeof keyId !== "string" || !Buffer.isBuffer(blob)) return undefined;
  return { keyId, blob };
}

function encodeBuckets(buckets: BucketRef[]): string {
  return JSON.stringify(buckets.map(b => [b.range, b.bucket]));
}

function decodeBuckets(text: unknown): BucketRef[] {
  if (typeof text !== "string" || text === "") return [];
  const parsed = JSON.parse(text) as [number, number][];
  return parsed.map(([range, bucket]) => ({ range, bucket }));
}

/** Remaining lifetime in whole seconds (at least 1) of something that ends at `expiresAt`. */
export function ttlUntil(expiresAt: number, now = Date.now()): number {
  return Math.max(1, Math.ceil((expiresAt - now) / 1000));
}

export class QueueStore {
  private readonly ks: string;
  private readonly ownerTtl: number;
  private readonly write: object;
  private readonly read = { prepare: true, consistency: consistencies.localQuorum };
  private readonly serialRead: object;

  constructor(
    private readonly client: Client,
    keyspace: string,
    private readonly retentionSeconds: number,
    serialScope: SerialScope = "local",
  ) {
    this.ks = keyspace;
    this.ownerTtl = retentionSeconds + OWNER_ROW_MARGIN_SECONDS;
    const serial = serialScope === "global" ? consistencies.serial : consistencies.localSerial;
    this.write = { prepare: true, consistency: consistencies.localQuorum, serialConsistency: serial };
    this.serialRead = { prepare: true, consistency: serial };
  }

  // ---- queue_owner ---------------------------------------------------------------------------

  async readOwner(queue: string, serial = false): Promise<OwnerRow | null> {
    const rs = await this.client.execute(
      `SELECT range_id, node, lease_until, buckets FROM ${this.ks}.queue_owner WHERE queue = ?`,
      [queue],
      serial ? this.serialRead : this.read,
    );
    const row = rs.first();
    if (!row || row["range_id"] === null) return null;
    return {
      rangeId: num(row["range_id"]) ?? 0,
      node: (row["node"] as string | null) ?? "",
      leaseUntil: (row["lease_until"] as Date | null)?.getTime() ?? 0,
      buckets: decodeBuckets(row["buckets"]),
    };
  }

  /** Creates the owner row; false when one exists already. */
  async insertOwner(queue: string, row: OwnerRow): Promise<boolean> {
    const rs = await this.client.execute(
      `INSERT INTO ${this.ks}.queue_owner (queue, range_id, node, lease_until, buckets) VALUES (?, ?, ?, ?, ?)
       IF NOT EXISTS USING TTL ?`,
      [queue, long(row.rangeId), row.node, new Date(row.leaseUntil), encodeBuckets(row.buckets), this.ownerTtl],
      this.write,
    );
    return rs.wasApplied();
  }

  /**
   * Overwrites the whole owner row (every cell gets a fresh TTL) if it still has the range and the
   * bucket list we last saw: a rollover that slipped in between makes the change fail.
   */
  async updateOwner(queue: string, expected: OwnerRow, row: OwnerRow): Promise<boolean> {
    const rs = await this.client.execute(
      `UPDATE ${this.ks}.queue_owner USING TTL ? SET range_id = ?, node = ?, lease_until = ?, buckets = ?
       WHERE queue = ? IF range_id = ? AND buckets = ?`,
      [
        this.ownerTtl,
        long(row.rangeId),
        row.node,
        new Date(row.leaseUntil),
        encodeBuckets(row.buckets),
        queue,
        long(expected.rangeId),
        encodeBuckets(expected.buckets),
      ],
      this.write,
    );
    return rs.wasApplied();
  }

  // ---- queue_log partitions ------------------------------------------------------------------

  /** Opens a partition for writing; false when it exists already (e.g. sealed by a takeover). */
  async createBucket(queue: string, ref: BucketRef): Promise<boolean> {
    const rs = await this.client.execute(
      `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, sealed) VALUES (?, ?, ?, false)
       IF NOT EXISTS USING TTL ?`,
      [queue, long(ref.range), ref.bucket, this.retentionSeconds],
      this.write,
    );
    return rs.wasApplied();
  }

  /** Seals a partition so that no batch of its writer can apply any more. Idempotent. */
  async sealBucket(queue: string, ref: BucketRef): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const upd = await this.client.execute(
        `UPDATE ${this.ks}.queue_log USING TTL ? SET sealed = true
         WHERE queue = ? AND range_id = ? AND bucket = ? IF sealed = false`,
        [this.retentionSeconds, queue, long(ref.range), ref.bucket],
        this.write,
      );
      if (upd.wasApplied()) return;
      const current = upd.first()?.["sealed"] as boolean | null | undefined;
      if (current === true) return;
      // The partition has no fence row yet: create it sealed, so its writer can never open it.
      const ins = await this.client.execute(
        `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, sealed) VALUES (?, ?, ?, true)
         IF NOT EXISTS USING TTL ?`,
        [queue, long(ref.range), ref.bucket, this.retentionSeconds],
        this.write,
      );
      if (ins.wasApplied()) return;
    }
    throw new OwnershipLostError(queue, `could not seal log partition ${ref.range}/${ref.bucket}`);
  }

  /**
   * Appends events to a partition in one conditional batch, fenced by `sealed = false`.
   * Returns false when the partition was sealed (the caller has lost the queue).
   */
  async appendFenced(queue: string, ref: BucketRef, firstPos: number, events: LogEvent[]): Promise<boolean> {
    const now = Date.now();
    const range = long(ref.range);
    const queries: { query: string; params: unknown[] }[] = [
      {
        query: `UPDATE ${this.ks}.queue_log USING TTL ? SET sealed = false
                WHERE queue = ? AND range_id = ? AND bucket = ? IF sealed = false`,
        params: [this.retentionSeconds, queue, range, ref.bucket],
      },
    ];
    events.forEach((e, i) => {
      queries.push({
        query: `INSERT INTO ${this.ks}.queue_log (${EVENT_COLUMNS.join(", ")})
                VALUES (${EVENT_COLUMNS.map(() => "?").join(", ")}) USING TTL ?`,
        params: [
          queue,
          range,
          ref.bucket,
          firstPos + i,
          e.kind,
          e.taskId,
          e.seq === undefined ? undefined : long(e.seq),
          e.clientId,
          e.value?.keyId,
          e.value?.blob,
          e.token?.keyId,
          e.token?.blob,
          e.attempt,
          e.maxAttempts,
          e.state,
          optLong(e.notBefore),
          e.worker,
          optLong(e.leaseUntil),
          e.ttrMs,
          optLong(e.leaseStart),
          long(e.expiresAt),
          e.progress?.keyId,
          e.progress?.blob,
          e.error?.keyId,
          e.error?.blob,
          e.reason,
          e.cancelled,
          e.result?.keyId,
          e.result?.blob,
          ttlUntil(e.expiresAt, now),
        ],
      });
    });
    const rs = await this.client.batch(queries, { ...this.write, logged: false });
    return rs.wasApplied();
  }

  /**
   * Whether a partition has been sealed, read at LOCAL_QUORUM. A takeover serves nothing before its
   * seal is committed, so an owner that reads `false` here may still answer from memory.
   */
  async isSealed(queue: string, ref: BucketRef): Promise<boolean> {
    const rs = await this.client.execute(
      `SELECT sealed FROM ${this.ks}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ? LIMIT 1`,
      [queue, long(ref.range), ref.bucket],
      this.read,
    );
    return rs.first()?.["sealed"] !== false;
  }

  /** Reads a whole partition in log order. Used only by a takeover, after sealing it. */
  async readBucket(queue: string, ref: BucketRef): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    const query = `SELECT ${EVENT_COLUMNS.slice(3).join(", ")}
                   FROM ${this.ks}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ?`;
    let pageState: string | undefined;
    do {
      const rs = await this.client.execute(query, [queue, long(ref.range), ref.bucket], {
        ...this.read,
        fetchSize: 1000,
        pageState,
      });
      for (const row of rs.rows) {
        if (row["pos"] === null || row["kind"] === null) continue; // the static row alone
        out.push({
          pos: row["pos"] as number,
          kind: row["kind"] as EventKind,
          taskId: row["task_id"] as string,
          seq: num(row["seq"]),
          clientId: (row["client_id"] as boolean | null) ?? undefined,
          value: sealedOf(row["key_id"], row["value"]),
          token: sealedOf(row["token_key_id"], row["wf_token"]),
          attempt: (row["attempt"] as number | null) ?? undefined,
          maxAttempts: (row["max_attempts"] as number | null) ?? undefined,
          state: (row["state"] as number | null) ?? undefined,
          notBefore: num(row["not_before"]),
          worker: (row["worker"] as string | null) ?? undefined,
          leaseUntil: num(row["lease_until"]),
          ttrMs: (row["ttr"] as number | null) ?? undefined,
          leaseStart: num(row["lease_start"]),
          expiresAt: num(row["expires_at"]) ?? 0,
          progress: sealedOf(row["progress_key_id"], row["progress"]),
          error: sealedOf(row["error_key_id"], row["error"]),
          reason: (row["reason"] as string | null) ?? undefined,
          cancelled: (row["cancelled"] as boolean | null) ?? undefined,
          result: sealedOf(row["result_key_id"], row["result"]),
        });
      }
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    return out;
  }

  // ---- task_index ----------------------------------------------------------------------------

  async readTaskIndex(queue: string, taskId: string): Promise<number | null> {
    const rs = await this.client.execute(
      `SELECT seq FROM ${this.ks}.task_index WHERE queue = ? AND task_id = ?`,
      [queue, taskId],
      this.read,
    );
    const row = rs.first();
    return row ? (num(row["seq"]) ?? 0) : null;
  }

  async writeTaskIndex(queue: string, taskId: string, seq: number, expiresAt: number): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.task_index (queue, task_id, seq) VALUES (?, ?, ?) USING TTL ?`,
      [queue, taskId, long(seq), ttlUntil(expiresAt)],
      { ...this.write, isIdempotent: true },
    );
  }

  // ---- owner_queues -------------------------------------------------------------------------

  /** Records that the owner has this queue; the row lives as long as a task added now. */
  async registerQueue(ownerId: string, serviceId: string): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.owner_queues (owner_id, service_id, seen_at) VALUES (?, ?, ?) USING TTL ?`,
      [ownerId, serviceId, new Date(), this.retentionSeconds],
      { ...this.write, isIdempotent: true },
    );
  }

  /** The owner's queues that saw an add within the retention. */
  async listQueues(ownerId: string): Promise<{ serviceId: string; seenAt: number }[]> {
    const out: { serviceId: string; seenAt: number }[] = [];
    let pageState: string | undefined;
    do {
      const rs = await this.client.execute(
        `SELECT service_id, seen_at FROM ${this.ks}.owner_queues WHERE owner_id = ?`,
        [ownerId],
        { ...this.read, fetchSize: 1000, pageState },
      );
      for (const row of rs.rows) {
        out.push({ serviceId: row["service_id"] as string, seenAt: (row["seen_at"] as Date | null)?.getTime() ?? 0 });
      }
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    return out;
  }

  /** Cheap liveness probe for health checks. */
  async ping(): Promise<void> {
    await this.client.execute("SELECT release_version FROM system.local", [], this.read);
  }
}
