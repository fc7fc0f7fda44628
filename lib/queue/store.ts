/**
 * Every CQL statement of the queue, and nothing else: no decisions live here. Statements are
 * prepared; consistency LOCAL_QUORUM, serial consistency LOCAL_SERIAL (or SERIAL), set on each call.
 */
import { types, type Client } from "cassandra-driver";
import type { Sealed } from "../codec";
import { OwnershipLostError } from "../errors";
import { decodeEvent, decodeRun, encodeEvent, packRun } from "./event-codec";
import {
  position,
  splitPosition,
  type BucketRef,
  type EventKind,
  type LogEvent,
  type ParkedTask,
  type StoredEvent,
} from "./task";

const { consistencies } = types;

/** Where a queue's log stands: what a takeover must seal and read. Stored as JSON in queue_owner.log_state. */
export interface LogState {
  /** Log position a takeover replays from (its checkpoint is the fold of every event before it); null before the first. */
  ckpt: number | null;
  /** Where that checkpoint is: its slot in queue_checkpoint and its version. */
  slot: number;
  version: number;
  /** The partitions from the checkpoint's on, in log order. */
  replay: BucketRef[];
  /** The partitions their owner may still write: a takeover seals them. */
  open: BucketRef[];
  /**
   * The longest fence lease (ms) of the owners that may still write a partition of `open`: a
   * takeover waits twice this long after sealing them before it reads them. 0 or absent: none.
   */
  fenceLeaseMs?: number;
}

export interface OwnerRow {
  rangeId: number;
  node: string;
  leaseUntil: number;
  state: LogState;
  /** Version 1's open partitions (a row written by version 1 has these and no log state). */
  legacyBuckets: BucketRef[];
  /** The stored texts, exactly as read, for the conditions of the next LWT. */
  stateText: string | null;
  legacyText: string | null;
}

/** Serial consistency of every condition: LOCAL_SERIAL when all queue nodes share one data center, else SERIAL. */
export type SerialScope = "local" | "global";

/** A task_index entry to write: the task's source at `pos` (an add, or a carry). */
export interface IndexWrite {
  taskId: string;
  seq: number;
  pos: number;
  clientId: boolean;
  expiresAt: number;
  delivered?: boolean;
}

/** What task_index knows of a task. */
export interface IndexEntry {
  seq: number;
  /** The task's source position. */
  pos: number;
  clientId: boolean;
  hint: ParkedHint;
}

/** Where a task went when it left the backlog for a parked table (a hint: the parked row decides). */
export type ParkedHint =
  | { kind: "none" }
  | { kind: "delayed"; minute: number; part: number; dueAt: number; pos: number }
  | { kind: "dead"; hour: number; part: number; pos: number }
  | { kind: "cancelled" }
  /** Delivered from a parked table: when it is not in the owner's memory, it has ended. */
  | { kind: "delivered" };

const HINT_CODE = { none: 0, delayed: 1, dead: 2, cancelled: 3, delivered: 4 } as const;

const HANDOVER_SHARDS = 16;

function handoverShard(queue: string): number {
  let h = 0;
  for (let i = 0; i < queue.length; i++) h = (h * 31 + queue.charCodeAt(i)) | 0;
  return Math.abs(h) % HANDOVER_SHARDS;
}

/** The owner row outlives every task written while it was owned (renewals are at most ownerLeaseMs apart). */
const OWNER_ROW_MARGIN_SECONDS = 86_400;

function long(n: number): types.Long {
  return types.Long.fromNumber(n);
}

function num(v: unknown): number | undefined {
  if (v === null || v === undefined) return undefined;
  if (v instanceof types.Long) return v.toNumber();
  return Number(v);
}

function sealedOf(keyId: unknown, blob: unknown): Sealed | undefined {
  if (typeof keyId !== "string" || !Buffer.isBuffer(blob)) return undefined;
  return { keyId, blob };
}

function opt<T>(v: T | null | undefined): T | undefined {
  return v === null ? undefined : v;
}

export function encodeLogState(s: LogState): string {
  return JSON.stringify({
    c: s.ckpt,
    s: s.slot,
    v: s.version,
    r: s.replay.map(b => [b.range, b.bucket]),
    o: s.open.map(b => [b.range, b.bucket]),
    ...(s.fenceLeaseMs ? { f: s.fenceLeaseMs } : {}),
  });
}

function refs(list: unknown): BucketRef[] {
  return Array.isArray(list) ? (list as [number, number][]).map(([range, bucket]) => ({ range, bucket })) : [];
}

/**
 * The fence lease a takeover assumes for a recorded value it cannot read: the longest (waiting too
 * long is slow; too short is unsafe).
 */
export const UNREADABLE_FENCE_LEASE_MS = 60_000;

/** A recorded fence lease: none when absent or 0, the longest when it is not a positive number. */
function recordedLease(f: unknown): number | undefined {
  if (f === undefined || f === 0) return undefined;
  return typeof f === "number" && Number.isFinite(f) && f > 0 ? f : UNREADABLE_FENCE_LEASE_MS;
}

export const EMPTY_LOG_STATE: LogState = { ckpt: null, slot: 1, version: 0, replay: [], open: [] };

export function decodeLogState(text: string | null | undefined): LogState {
  if (!text) return { ...EMPTY_LOG_STATE };
  const parsed = JSON.parse(text) as {
    c?: number | null;
    s?: number;
    v?: number;
    r?: unknown;
    o?: unknown;
    f?: unknown;
  };
  return {
    ckpt: parsed.c ?? null,
    slot: parsed.s ?? 1,
    version: parsed.v ?? 0,
    replay: refs(parsed.r),
    open: refs(parsed.o),
    ...(recordedLease(parsed.f) ? { fenceLeaseMs: recordedLease(parsed.f) } : {}),
  };
}

/** A checkpoint slot as stored: who wrote it last (range, version) and its snapshot chunks. */
export interface CheckpointSlot {
  rangeId: number | null;
  version: number | null;
  chunks: Buffer[];
}

/** Remaining lifetime in whole seconds (at least 1) of something that ends at `expiresAt`. */
export function ttlUntil(expiresAt: number, now = Date.now()): number {
  return Math.max(1, Math.ceil((expiresAt - now) / 1000));
}

/**
 * The columns of an event row written before version 2.2, one per field: rows of this version
 * keep every field in `ev` (lib/queue/event-codec.ts), and older rows are still read.
 */
const LEGACY_EVENT_COLUMNS = [
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
  "src",
  "ref",
  "ref_part",
  "ref_time",
  "flags",
];

/** What an event read selects: the compact columns, or (for a partition with older rows) every one. */
const EVENT_COLUMNS = "kind, ev, evs";
const ALL_EVENT_COLUMNS = `ev, evs, ${LEGACY_EVENT_COLUMNS.join(", ")}`;

/**
 * Most events in one run row (`evs`): consecutive events of a batch with the same TTL. A read
 * that starts at a position looks this far back for the run holding it.
 */
export const MAX_RUN_EVENTS = 128;
/** Events are added to a run while its blob stays under this size; a larger event is a row of its own. */
const MAX_RUN_BYTES = 64 * 1024;

/**
 * A page of one partition's events. `runs` are the spans [first, end) of the run rows it read (by
 * position in the partition): a later page from inside one of them may pass its first as `runFrom`.
 */
export interface BucketPage {
  events: StoredEvent[];
  done: boolean;
  runs: [number, number][];
  /** Rows read for it. */
  rows: number;
}

/** Rows asked for first by a page read that knows nothing of the rows' sizes. */
const FIRST_PAGE_ROWS = 16;

/** An event row written before version 2.2, read without its per-field columns. */
function isLegacyRow(row: types.Row): boolean {
  return row["kind"] !== null && row["kind"] !== undefined && !Buffer.isBuffer(row["ev"]);
}

/**
 * The events a row holds, with their positions: a run row's (from `pos` on), an event row's, or
 * none (the static row, a marker).
 */
function eventsOfRow(row: types.Row, ref: BucketRef): StoredEvent[] {
  const pos = row["pos"] as number | null;
  if (pos === null || pos >= MARKER_BASE) return [];
  const run = row["evs"];
  if (Buffer.isBuffer(run)) return decodeRun(run, pos, p => position(ref.range, ref.bucket, p));
  if (row["kind"] === null || row["kind"] === undefined) return [];
  return [eventOf(row, position(ref.range, ref.bucket, pos))];
}

function eventOf(row: types.Row, at: number): StoredEvent {
  const ev = row["ev"];
  if (Buffer.isBuffer(ev)) return decodeEvent(row["kind"] as EventKind, ev, at);
  return {
    at,
    kind: row["kind"] as EventKind,
    taskId: (row["task_id"] as string | null) ?? "",
    seq: num(row["seq"]),
    clientId: opt(row["client_id"] as boolean | null),
    value: sealedOf(row["key_id"], row["value"]),
    token: sealedOf(row["token_key_id"], row["wf_token"]),
    attempt: opt(row["attempt"] as number | null),
    maxAttempts: opt(row["max_attempts"] as number | null),
    state: opt(row["state"] as number | null),
    notBefore: num(row["not_before"]),
    worker: opt(row["worker"] as string | null),
    leaseUntil: num(row["lease_until"]),
    ttrMs: opt(row["ttr"] as number | null),
    leaseStart: num(row["lease_start"]),
    expiresAt: num(row["expires_at"]) ?? 0,
    progress: sealedOf(row["progress_key_id"], row["progress"]),
    error: sealedOf(row["error_key_id"], row["error"]),
    reason: opt(row["reason"] as string | null),
    cancelled: opt(row["cancelled"] as boolean | null),
    result: sealedOf(row["result_key_id"], row["result"]),
    src: num(row["src"]),
    ref: num(row["ref"]),
    refPart: opt(row["ref_part"] as number | null),
    refTime: num(row["ref_time"]),
    flags: opt(row["flags"] as number | null),
  };
}

const PARKED_COLUMNS = [
  "task_id",
  "seq",
  "client_id",
  "key_id",
  "value",
  "token_key_id",
  "wf_token",
  "attempt",
  "max_attempts",
  "expires_at",
  "progress_key_id",
  "progress",
  "error_key_id",
  "error",
  "reason",
];

function parkedParams(t: ParkedTask): unknown[] {
  return [
    t.taskId,
    long(t.seq),
    t.clientId,
    t.body.value.keyId,
    t.body.value.blob,
    t.body.token?.keyId,
    t.body.token?.blob,
    t.attempt,
    t.maxAttempts,
    long(t.expiresAt),
    t.progress?.keyId,
    t.progress?.blob,
    t.error?.keyId,
    t.error?.blob,
    t.reason,
  ];
}

function parkedOf(
  row: types.Row,
  slot: number,
  part: number,
  dueAt: number,
  consumedColumn: string,
): ParkedTask | null {
  const value = sealedOf(row["key_id"], row["value"]);
  // A mark that landed before its row (both are written after commit, in any order): not a task yet.
  if (!value) return null;
  return {
    slot,
    part,
    dueAt,
    pos: num(row["pos"]) ?? 0,
    taskId: row["task_id"] as string,
    seq: num(row["seq"]) ?? 0,
    clientId: (row["client_id"] as boolean | null) ?? false,
    body: { value, token: sealedOf(row["token_key_id"], row["wf_token"]) },
    attempt: (row["attempt"] as number | null) ?? 0,
    maxAttempts: (row["max_attempts"] as number | null) ?? 0,
    expiresAt: num(row["expires_at"]) ?? 0,
    progress: sealedOf(row["progress_key_id"], row["progress"]),
    error: sealedOf(row["error_key_id"], row["error"]),
    reason: opt(row["reason"] as string | null),
    consumed: row[consumedColumn] === true,
  };
}

/**
 * Batch markers are rows at MARKER_BASE + the batch's first position, above every event position
 * (a partition holds at most 2^14 events), so that one slice from a position on holds the events
 * and all the markers.
 */
export const MARKER_BASE = 2 ** 20;
/** A takeover's slice (events from the checkpoint on, and every marker) in one page. */
const TAIL_PAGE_ROWS = 2 * 2 ** 14 + 16;
/** A partition's recorded end outlives its rows (outcome events are kept a day past their task). */
const END_MARGIN_SECONDS = 2 * 86_400;

export class QueueStore {
  private readonly ks: string;
  private readonly ownerTtl: number;
  private readonly write: object;
  private readonly idempotentWrite: object;
  private readonly read: { prepare: boolean; consistency: number };
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
    // Quorums that meet: the fence read must see a takeover's seal, and a takeover's read the
    // owner's writes (docs/ARCHITECTURE.md, Invariant A); across data centers that takes QUORUM.
    const quorum = serialScope === "global" ? consistencies.quorum : consistencies.localQuorum;
    this.read = { prepare: true, consistency: quorum };
    this.write = { prepare: true, consistency: quorum, serialConsistency: serial };
    this.idempotentWrite = { ...this.write, isIdempotent: true };
    this.serialRead = { prepare: true, consistency: serial };
  }

  // ---- queue_owner ---------------------------------------------------------------------------

  async readOwner(queue: string, serial = false): Promise<OwnerRow | null> {
    const rs = await this.client.execute(
      `SELECT range_id, node, lease_until, log_state, buckets FROM ${this.ks}.queue_owner WHERE queue = ?`,
      [queue],
      serial ? this.serialRead : this.read,
    );
    const row = rs.first();
    if (!row || row["range_id"] === null) return null;
    const stateText = (row["log_state"] as string | null) ?? null;
    const legacyText = (row["buckets"] as string | null) ?? null;
    return {
      rangeId: num(row["range_id"]) ?? 0,
      node: (row["node"] as string | null) ?? "",
      leaseUntil: (row["lease_until"] as Date | null)?.getTime() ?? 0,
      state: decodeLogState(stateText),
      legacyBuckets: legacyText ? refs(JSON.parse(legacyText)) : [],
      stateText,
      legacyText,
    };
  }

  /** Creates the owner row; false when one exists already. */
  async insertOwner(
    queue: string,
    row: { rangeId: number; node: string; leaseUntil: number; state: LogState },
  ): Promise<boolean> {
    const rs = await this.client.execute(
      `INSERT INTO ${this.ks}.queue_owner (queue, range_id, node, lease_until, log_state) VALUES (?, ?, ?, ?, ?)
       IF NOT EXISTS USING TTL ?`,
      [queue, long(row.rangeId), row.node, new Date(row.leaseUntil), encodeLogState(row.state), this.ownerTtl],
      this.write,
    );
    return rs.wasApplied();
  }

  /**
   * Overwrites the owner row (every cell gets a fresh TTL) if it still has the range and the log
   * state we last saw: a change that slipped in between makes this one fail. Returns the stored text.
   */
  async updateOwner(
    queue: string,
    expected: Pick<OwnerRow, "rangeId" | "stateText" | "legacyText">,
    row: { rangeId: number; node: string; leaseUntil: number; state: LogState },
  ): Promise<string | null> {
    const text = encodeLogState(row.state);
    const rs = await this.client.execute(
      `UPDATE ${this.ks}.queue_owner USING TTL ? SET range_id = ?, node = ?, lease_until = ?, log_state = ?, buckets = ?
       WHERE queue = ? IF range_id = ? AND log_state = ? AND buckets = ?`,
      [
        this.ownerTtl,
        long(row.rangeId),
        row.node,
        new Date(row.leaseUntil),
        text,
        // Only a version-1 row has buckets: cleared when it is taken over, otherwise left unset.
        expected.legacyText === null ? undefined : null,
        queue,
        long(expected.rangeId),
        expected.stateText,
        expected.legacyText,
      ],
      this.write,
    );
    return rs.wasApplied() ? text : null;
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

  /**
   * Seals a partition: from now on its writer's fence reads find it sealed and it commits nothing
   * more there. Idempotent. A partition whose fence flag expired (null) is sealed too.
   */
  async sealBucket(queue: string, ref: BucketRef): Promise<void> {
    const key = [queue, long(ref.range), ref.bucket];
    for (let i = 0; i < 10; i++) {
      const upd = await this.client.execute(
        `UPDATE ${this.ks}.queue_log USING TTL ? SET sealed = true
         WHERE queue = ? AND range_id = ? AND bucket = ? IF sealed = false`,
        [this.retentionSeconds, ...key],
        this.write,
      );
      if (upd.wasApplied()) return;
      const current = upd.first()?.["sealed"] as boolean | null | undefined;
      if (current === true) return;
      // No fence flag: the partition does not exist yet, or its flag expired (an open partition
      // older than the retention). A static-only INSERT IF NOT EXISTS applies in both cases (it
      // looks at the static row only): sealed, its writer can never open it or commit there.
      const ins = await this.client.execute(
        `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, sealed) VALUES (?, ?, ?, true)
         IF NOT EXISTS USING TTL ?`,
        [...key, this.retentionSeconds],
        this.write,
      );
      if (ins.wasApplied()) return;
    }
    throw new OwnershipLostError(queue, `could not seal log partition ${ref.range}/${ref.bucket}`);
  }

  /**
   * Rewrites an open partition's fence flag with a fresh TTL, if it is still open (an LWT, so it
   * cannot undo a seal). False when the partition was sealed.
   */
  async refreshFence(queue: string, ref: BucketRef): Promise<boolean> {
    const rs = await this.client.execute(
      `UPDATE ${this.ks}.queue_log USING TTL ? SET sealed = false
       WHERE queue = ? AND range_id = ? AND bucket = ? IF sealed = false`,
      [this.retentionSeconds, queue, long(ref.range), ref.bucket],
      this.write,
    );
    return rs.wasApplied();
  }

  /**
   * Appends events to a partition in one plain single-partition batch, with the batch's marker: a
   * row at position MARKER_BASE + firstPos saying where the batch ends, kept at least as long as the
   * batch's rows (event rows may expire sooner, with their tasks). A takeover follows the markers to
   * find where the partition's gap-free run of batches ends. Never writes the fence flag, so it
   * cannot undo a seal; the events count only once a fence read started after this resolved finds
   * the partition unsealed (see EventLog).
   */
  async appendEvents(queue: string, ref: BucketRef, firstPos: number, events: LogEvent[]): Promise<void> {
    const now = Date.now();
    const range = long(ref.range);
    const single = `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, pos, kind, ev) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?`;
    const run = `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, pos, evs) VALUES (?, ?, ?, ?, ?) USING TTL ?`;
    let longest = this.retentionSeconds;
    const queries: { query: string; params: unknown[] }[] = [];
    const blobs = events.map(encodeEvent);
    // Consecutive events with the same TTL share a row (a run), so a row never outlives one of
    // its events' retention; a run is at most MAX_RUN_EVENTS events and about MAX_RUN_BYTES.
    for (let i = 0; i < events.length;) {
      const ttl = ttlUntil(events[i]!.expiresAt, now);
      longest = Math.max(longest, ttl);
      let j = i + 1;
      let bytes = blobs[i]!.length;
      while (
        j < events.length &&
        j - i < MAX_RUN_EVENTS &&
        bytes + blobs[j]!.length <= MAX_RUN_BYTES &&
        ttlUntil(events[j]!.expiresAt, now) === ttl
      ) {
        bytes += blobs[j]!.length;
        j++;
      }
      if (j - i === 1) {
        queries.push({
          query: single,
          params: [queue, range, ref.bucket, firstPos + i, events[i]!.kind, blobs[i], ttl],
        });
      } else {
        const kinds = events.slice(i, j).map(e => e.kind);
        queries.push({
          query: run,
          params: [queue, range, ref.bucket, firstPos + i, packRun(kinds, blobs.slice(i, j)), ttl],
        });
      }
      i = j;
    }
    queries.push({
      query: `INSERT INTO ${this.ks}.queue_log (queue, range_id, bucket, pos, batch_end) VALUES (?, ?, ?, ?, ?) USING TTL ?`,
      params: [queue, range, ref.bucket, MARKER_BASE + firstPos, firstPos + events.length, longest],
    });
    await this.client.batch(queries, { ...this.write, logged: false });
  }

  /**
   * What a takeover reads of a partition it sealed: the events from `fromPos` on, the spans
   * [first, end) of the batches that reached it (their markers), and its recorded end, in one
   * slice read as one page: a single quorum read, whose blocking read repair leaves everything it
   * returned on a quorum, so every later reader sees at least the same rows. `onePage` is false when
   * the slice did not fit one page (it is read on, but that guarantee then holds page by page).
   */
  async readTail(
    queue: string,
    ref: BucketRef,
    fromPos: number,
    columns = EVENT_COLUMNS,
  ): Promise<{ events: StoredEvent[]; spans: [number, number][]; end: number | null; onePage: boolean }> {
    const events: StoredEvent[] = [];
    const spans: [number, number][] = [];
    let end: number | null = null;
    let pageState: string | undefined;
    let pages = 0;
    do {
      // From as far back as a run holding `fromPos` may start.
      const rs = await this.client.execute(
        `SELECT pos, end_pos, batch_end, ${columns} FROM ${this.ks}.queue_log
         WHERE queue = ? AND range_id = ? AND bucket = ? AND pos >= ?`,
        [queue, long(ref.range), ref.bucket, Math.max(0, fromPos - MAX_RUN_EVENTS + 1)],
        { ...this.read, fetchSize: TAIL_PAGE_ROWS, pageState },
      );
      pages++;
      // A partition written before version 2.2: read it again with every column.
      if (columns === EVENT_COLUMNS && rs.rows.some(isLegacyRow))
        return this.readTail(queue, ref, fromPos, ALL_EVENT_COLUMNS);
      for (const row of rs.rows) {
        if (typeof row["end_pos"] === "number") end = row["end_pos"];
        const pos = row["pos"] as number | null;
        if (pos === null) continue;
        if (pos >= MARKER_BASE) {
          if (typeof row["batch_end"] === "number") spans.push([pos - MARKER_BASE, row["batch_end"]]);
        } else {
          for (const e of eventsOfRow(row, ref)) if (splitPosition(e.at).pos >= fromPos) events.push(e);
        }
      }
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    return { events, spans, end, onePage: pages === 1 };
  }

  /**
   * Whether a partition has been sealed, read at LOCAL_QUORUM (the fence read). A takeover serves
   * nothing before its seal is written on a quorum, so an owner that reads `false` here holds it.
   */
  async isSealed(queue: string, ref: BucketRef): Promise<boolean> {
    const rs = await this.client.execute(
      `SELECT sealed FROM ${this.ks}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ? LIMIT 1`,
      [queue, long(ref.range), ref.bucket],
      this.read,
    );
    return rs.first()?.["sealed"] !== false;
  }

  /**
   * Records where a sealed partition ends (rows at or after it are ignored by every reader), once:
   * returns the end that stands, ours or the one another takeover recorded first.
   */
  async setBucketEnd(queue: string, ref: BucketRef, end: number): Promise<number> {
    const rs = await this.client.execute(
      `UPDATE ${this.ks}.queue_log USING TTL ? SET end_pos = ?
       WHERE queue = ? AND range_id = ? AND bucket = ? IF end_pos = null`,
      [this.retentionSeconds + END_MARGIN_SECONDS, end, queue, long(ref.range), ref.bucket],
      this.write,
    );
    if (rs.wasApplied()) return end;
    const stood = rs.first()?.["end_pos"] as number | null | undefined;
    if (typeof stood !== "number")
      throw new Error(`could not record the end of log partition ${ref.range}/${ref.bucket}`);
    return stood;
  }

  /**
   * Events of one partition from `fromPos` on (and before `beforePos` when given), in log order, at
   * most `limit`; never at or after the partition's recorded end. `done` is true when the partition
   * holds nothing more in that span.
   *
   * A row holds one event or a run of up to 128, so `limit` rows always suffice, but asking for
   * that many rows at once fetched up to 128 times the events wanted (a drain read 242 MB of rows to
   * deliver 30,000 tasks). Cassandra is asked for the rows the events per row seen so far call for
   * (`eventsPerRow`: the caller's estimate from its last page; else FIRST_PAGE_ROWS), and paged on
   * while the page is short.
   */
  async readBucket(
    queue: string,
    ref: BucketRef,
    fromPos: number,
    limit: number,
    beforePos?: number,
    runFrom?: number,
    columns = EVENT_COLUMNS,
    eventsPerRow?: number,
  ): Promise<BucketPage> {
    const cols = `pos, end_pos, ${columns}`;
    const where = `queue = ? AND range_id = ? AND bucket = ? AND pos >= ? AND pos < ?`;
    // Batch markers sit above every event position.
    const before = Math.min(beforePos ?? MARKER_BASE, MARKER_BASE);
    // Where the run holding `fromPos` starts, when the caller knows it (a run an earlier page read):
    // one slice from there instead of a lookup of the run and a slice.
    const hinted = runFrom !== undefined && runFrom < fromPos && fromPos - runFrom < MAX_RUN_EVENTS;
    const params: unknown[] = [queue, long(ref.range), ref.bucket, hinted ? runFrom : fromPos, before];
    const events: StoredEvent[] = [];
    const runs: [number, number][] = [];
    let pageState: string | undefined;
    let seen = 0;
    let first = !hinted;
    const page = (done: boolean): BucketPage => ({ events, done, runs, rows: seen });
    do {
      // Rows for the events still wanted, at the density read so far (one more for a run cut short).
      const density = events.length > 0 ? events.length / seen : eventsPerRow;
      const wanted = density && density > 0 ? Math.ceil((limit - events.length) / density) + 1 : FIRST_PAGE_ROWS;
      // No LIMIT: Cassandra 5.0 restarts a paged query from its first row when a later page's
      // size reaches the query's LIMIT (seen on the dev node), which returned events twice. The
      // loop stops at `limit` events itself; the driver pages bound what is fetched.
      const rs = await this.client.execute(`SELECT ${cols} FROM ${this.ks}.queue_log WHERE ${where}`, params, {
        ...this.read,
        fetchSize: Math.max(1, Math.min(wanted, limit, 1000)),
        pageState,
      });
      if (columns === EVENT_COLUMNS && rs.rows.some(isLegacyRow))
        return this.readBucket(queue, ref, fromPos, limit, beforePos, undefined, ALL_EVENT_COLUMNS, eventsPerRow);
      let rows = rs.rows;
      // No row at `fromPos` itself: it may lie inside a run that starts before it.
      if (first && fromPos > 0 && (rows[0]?.["pos"] ?? null) !== fromPos) {
        const holding = await this.runHolding(queue, ref, fromPos);
        if (holding) rows = [holding, ...rows];
      }
      first = false;
      for (const row of rows) {
        seen++;
        const end = row["end_pos"] as number | null;
        const last = end === null || end === undefined ? before : Math.min(before, end);
        const pos = row["pos"] as number;
        if (pos >= last) return page(true);
        const held = eventsOfRow(row, ref);
        if (held.length > 1) runs.push([pos, pos + held.length]);
        for (const e of held) {
          const at = splitPosition(e.at).pos;
          if (at < fromPos) continue;
          if (at >= last) return page(true);
          events.push(e);
          // The page ends at `limit` events (a row holds one or more).
          if (events.length >= limit) return page(false);
        }
      }
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    // Every row of the span was read.
    return page(true);
  }

  /** The run row that starts before `pos` and may hold it (the last row before it, when a run). */
  private async runHolding(queue: string, ref: BucketRef, pos: number): Promise<types.Row | undefined> {
    const rs = await this.client.execute(
      `SELECT pos, end_pos, evs FROM ${this.ks}.queue_log
       WHERE queue = ? AND range_id = ? AND bucket = ? AND pos < ? AND pos > ? ORDER BY pos DESC LIMIT 1`,
      [queue, long(ref.range), ref.bucket, pos, pos - MAX_RUN_EVENTS],
      this.read,
    );
    const row = rs.first();
    return row && Buffer.isBuffer(row["evs"]) ? row : undefined;
  }

  /** Every event of a partition from `fromPos` on. Used by a takeover, after sealing it. */
  async readBucketAll(queue: string, ref: BucketRef, fromPos = 0): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    let from = fromPos;
    for (;;) {
      const { events, done } = await this.readBucket(queue, ref, from, 5000);
      out.push(...events);
      if (done || events.length === 0) return out;
      from = splitPosition(events[events.length - 1]!.at).pos + 1;
    }
  }

  /** One event by its position (a task's source, an ack's outcome, a release's error). */
  async readEvent(queue: string, at: number, columns = EVENT_COLUMNS): Promise<StoredEvent | null> {
    const { range, bucket, pos } = splitPosition(at);
    // The last row at or before it: the event's own row, or the run holding it.
    const rs = await this.client.execute(
      `SELECT pos, end_pos, ${columns} FROM ${this.ks}.queue_log
       WHERE queue = ? AND range_id = ? AND bucket = ? AND pos <= ? AND pos > ? ORDER BY pos DESC LIMIT 1`,
      [queue, long(range), bucket, pos, pos - MAX_RUN_EVENTS],
      this.read,
    );
    const row = rs.first();
    if (row && columns === EVENT_COLUMNS && isLegacyRow(row)) return this.readEvent(queue, at, ALL_EVENT_COLUMNS);
    if (!row) return null;
    const end = row["end_pos"] as number | null;
    if (end !== null && end !== undefined && pos >= end) return null;
    return eventsOfRow(row, { range, bucket }).find(e => e.at === at) ?? null;
  }

  // ---- queue_checkpoint -------------------------------------------------------------------------

  /** A checkpoint slot: its writer and version (serially read) and, when asked, its chunks. */
  async readCheckpoint(queue: string, slot: number, withChunks: boolean): Promise<CheckpointSlot> {
    const rs = await this.client.execute(
      `SELECT chunk, range_id, version, chunks${withChunks ? ", snapshot" : ""} FROM ${this.ks}.queue_checkpoint
       WHERE queue = ? AND slot = ?`,
      [queue, slot],
      { ...this.serialRead, fetchSize: 1000 },
    );
    const first = rs.first();
    const count = (first?.["chunks"] as number | null) ?? 0;
    const chunks: Buffer[] = [];
    if (withChunks) {
      for (const row of rs.rows) {
        const i = row["chunk"] as number | null;
        if (i !== null && i < count && Buffer.isBuffer(row["snapshot"])) chunks[i] = row["snapshot"] as Buffer;
      }
    }
    return { rangeId: num(first?.["range_id"]) ?? null, version: num(first?.["version"]) ?? null, chunks };
  }

  /**
   * Writes a snapshot into a slot in one conditional batch: applied only if the slot still has the
   * version we last saw there, so a deposed owner can never overwrite a newer owner's checkpoint.
   */
  async writeCheckpoint(
    queue: string,
    slot: number,
    expectedVersion: number | null,
    rangeId: number,
    version: number,
    chunks: Buffer[],
  ): Promise<boolean> {
    const ttl = this.ownerTtl;
    const queries: { query: string; params: unknown[] }[] = [
      {
        query: `UPDATE ${this.ks}.queue_checkpoint USING TTL ? SET range_id = ?, version = ?, chunks = ?
                WHERE queue = ? AND slot = ? IF version = ?`,
        params: [
          ttl,
          long(rangeId),
          long(version),
          chunks.length,
          queue,
          slot,
          expectedVersion === null ? null : long(expectedVersion),
        ],
      },
      ...chunks.map((snapshot, i) => ({
        query: `INSERT INTO ${this.ks}.queue_checkpoint (queue, slot, chunk, snapshot) VALUES (?, ?, ?, ?) USING TTL ?`,
        params: [queue, slot, i, snapshot, ttl],
      })),
    ];
    const rs = await this.client.batch(queries, { ...this.write, logged: false });
    return rs.wasApplied();
  }

  // ---- backlog_cancels --------------------------------------------------------------------------

  /** Records that the waiting task whose source is at `at` was cancelled. */
  async writeBacklogCancel(queue: string, at: number, expiresAt: number): Promise<void> {
    const { range, bucket, pos } = splitPosition(at);
    await this.client.execute(
      `INSERT INTO ${this.ks}.backlog_cancels (queue, range_id, bucket, pos) VALUES (?, ?, ?, ?) USING TTL ?`,
      [queue, long(range), bucket, pos, ttlUntil(expiresAt)],
      this.idempotentWrite,
    );
  }

  /** Positions of the cancelled waiting tasks whose sources are in a log partition. */
  async readBacklogCancels(queue: string, ref: BucketRef): Promise<number[]> {
    const rs = await this.client.execute(
      `SELECT pos FROM ${this.ks}.backlog_cancels WHERE queue = ? AND range_id = ? AND bucket = ?`,
      [queue, long(ref.range), ref.bucket],
      { ...this.read, fetchSize: 10_000 },
    );
    return rs.rows.map(r => position(ref.range, ref.bucket, r["pos"] as number));
  }

  // ---- parked tasks: queue_due, queue_dead ---------------------------------------------------

  async writeDue(queue: string, t: ParkedTask): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.queue_due (queue, minute, part, due_at, pos, ${PARKED_COLUMNS.join(", ")})
       VALUES (?, ?, ?, ?, ?, ${PARKED_COLUMNS.map(() => "?").join(", ")}) USING TTL ?`,
      [queue, long(t.slot), t.part, long(t.dueAt), long(t.pos), ...parkedParams(t), ttlUntil(t.expiresAt)],
      this.idempotentWrite,
    );
  }

  /** Marks a due row consumed out of order (a cancel); creates the mark alone if the row is not there yet. */
  async markDueCancelled(
    queue: string,
    minute: number,
    part: number,
    dueAt: number,
    pos: number,
    expiresAt: number,
  ): Promise<void> {
    await this.client.execute(
      `UPDATE ${this.ks}.queue_due USING TTL ? SET cancelled = true
       WHERE queue = ? AND minute = ? AND part = ? AND due_at = ? AND pos = ?`,
      [ttlUntil(expiresAt), queue, long(minute), part, long(dueAt), long(pos)],
      this.idempotentWrite,
    );
  }

  /** Due rows of one partition after (dueAt, pos), in due order, at most `limit`. */
  async readDue(
    queue: string,
    minute: number,
    part: number,
    after: { dueAt: number; pos: number } | null,
    limit: number,
  ): Promise<{ rows: ParkedTask[]; done: boolean }> {
    const cols = `due_at, pos, ${PARKED_COLUMNS.join(", ")}, cancelled`;
    const base = `SELECT ${cols} FROM ${this.ks}.queue_due WHERE queue = ? AND minute = ? AND part = ?`;
    const rs = after
      ? await this.client.execute(
          `${base} AND (due_at, pos) > (?, ?) LIMIT ?`,
          [queue, long(minute), part, long(after.dueAt), long(after.pos), limit],
          this.read,
        )
      : await this.client.execute(`${base} LIMIT ?`, [queue, long(minute), part, limit], this.read);
    const rows: ParkedTask[] = [];
    let last: { dueAt: number; pos: number } | null = null;
    for (const row of rs.rows) {
      const dueAt = num(row["due_at"]) ?? 0;
      last = { dueAt, pos: num(row["pos"]) ?? 0 };
      const t = parkedOf(row, minute, part, dueAt, "cancelled");
      if (t) rows.push(t);
      else rows.push({ ...placeholder(minute, part, last), consumed: true });
    }
    return { rows, done: rs.rows.length < limit };
  }

  async writeDead(queue: string, t: ParkedTask): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.queue_dead (queue, hour, part, pos, ${PARKED_COLUMNS.join(", ")})
       VALUES (?, ?, ?, ?, ${PARKED_COLUMNS.map(() => "?").join(", ")}) USING TTL ?`,
      [queue, long(t.slot), t.part, long(t.pos), ...parkedParams(t), ttlUntil(t.expiresAt)],
      this.idempotentWrite,
    );
  }

  /** Marks a dead row consumed (redriven or cancelled). */
  async markDeadConsumed(queue: string, hour: number, part: number, pos: number, expiresAt: number): Promise<void> {
    await this.client.execute(
      `UPDATE ${this.ks}.queue_dead USING TTL ? SET consumed = true WHERE queue = ? AND hour = ? AND part = ? AND pos = ?`,
      [ttlUntil(expiresAt), queue, long(hour), part, long(pos)],
      this.idempotentWrite,
    );
  }

  /** Dead rows of one partition after `afterPos`, oldest first, at most `limit`. */
  async readDead(
    queue: string,
    hour: number,
    part: number,
    afterPos: number | null,
    limit: number,
  ): Promise<{ rows: ParkedTask[]; done: boolean }> {
    const cols = `pos, ${PARKED_COLUMNS.join(", ")}, consumed`;
    const base = `SELECT ${cols} FROM ${this.ks}.queue_dead WHERE queue = ? AND hour = ? AND part = ?`;
    const rs =
      afterPos === null
        ? await this.client.execute(`${base} LIMIT ?`, [queue, long(hour), part, limit], this.read)
        : await this.client.execute(
            `${base} AND pos > ? LIMIT ?`,
            [queue, long(hour), part, long(afterPos), limit],
            this.read,
          );
    const rows: ParkedTask[] = [];
    for (const row of rs.rows) {
      const t = parkedOf(row, hour, part, 0, "consumed");
      rows.push(t ?? { ...placeholder(hour, part, { dueAt: 0, pos: num(row["pos"]) ?? 0 }), consumed: true });
    }
    return { rows, done: rs.rows.length < limit };
  }

  /** One dead row, when it exists. */
  async readDeadRow(queue: string, hour: number, part: number, pos: number): Promise<ParkedTask | null> {
    const rs = await this.client.execute(
      `SELECT pos, ${PARKED_COLUMNS.join(", ")}, consumed FROM ${this.ks}.queue_dead
       WHERE queue = ? AND hour = ? AND part = ? AND pos = ?`,
      [queue, long(hour), part, long(pos)],
      this.read,
    );
    const row = rs.first();
    return row ? parkedOf(row, hour, part, 0, "consumed") : null;
  }

  /** One due row, when it exists. */
  async readDueRow(
    queue: string,
    minute: number,
    part: number,
    dueAt: number,
    pos: number,
  ): Promise<ParkedTask | null> {
    const rs = await this.client.execute(
      `SELECT due_at, pos, ${PARKED_COLUMNS.join(", ")}, cancelled FROM ${this.ks}.queue_due
       WHERE queue = ? AND minute = ? AND part = ? AND due_at = ? AND pos = ?`,
      [queue, long(minute), part, long(dueAt), long(pos)],
      this.read,
    );
    const row = rs.first();
    return row ? parkedOf(row, minute, part, dueAt, "cancelled") : null;
  }

  // ---- task_index ----------------------------------------------------------------------------

  async readIndex(queue: string, taskId: string): Promise<IndexEntry | null> {
    const rs = await this.client.execute(
      `SELECT seq, pos, client_id, hint, hint_time, hint_part, hint_ref FROM ${this.ks}.task_index WHERE queue = ? AND task_id = ?`,
      [queue, taskId],
      this.read,
    );
    return indexEntryOf(rs.first());
  }

  /**
   * Several tasks' entries in one request (`task_id IN ...`: the coordinator reads each partition);
   * an id without an entry maps to null. Callers keep the list short (`INDEX_BATCH`).
   */
  async readIndexes(queue: string, taskIds: readonly string[]): Promise<Map<string, IndexEntry | null>> {
    const out = new Map<string, IndexEntry | null>(taskIds.map(id => [id, null]));
    if (taskIds.length === 0) return out;
    if (taskIds.length === 1) {
      out.set(taskIds[0]!, await this.readIndex(queue, taskIds[0]!));
      return out;
    }
    const rs = await this.client.execute(
      `SELECT task_id, seq, pos, client_id, hint, hint_time, hint_part, hint_ref FROM ${this.ks}.task_index WHERE queue = ? AND task_id IN ?`,
      [queue, [...taskIds]],
      this.read,
    );
    // A row comes back with its id as stored, in UTF-8: an id that is not well-formed text (a lone
    // surrogate) comes back with U+FFFD in its place. Match rows to the ids asked for in that form
    // (every id of that form names the same row, as the single-row read finds).
    const asked = new Map<string, string[]>();
    for (const id of taskIds) {
      const stored = Buffer.from(id, "utf8").toString("utf8");
      asked.set(stored, [...(asked.get(stored) ?? []), id]);
    }
    for (const row of rs.rows) {
      const entry = indexEntryOf(row);
      for (const id of asked.get(row["task_id"] as string) ?? []) out.set(id, entry);
    }
    return out;
  }

  /**
   * The task's source (at an add or a carry); clears any parked hint, or says it was delivered from
   * one. Every task_index write is stamped with its event's log position, so the last event wins
   * whatever order the writes land in (a late write of a deposed owner included).
   */
  async writeIndex(
    queue: string,
    taskId: string,
    seq: number,
    pos: number,
    clientId: boolean,
    expiresAt: number,
    delivered = false,
  ): Promise<void> {
    await this.writeIndexes(queue, [{ taskId, seq, pos, clientId, expiresAt, delivered }]);
  }

  /**
   * Several tasks' entries (each as `writeIndex`): one statement, or for more than one an unlogged
   * batch of their partitions, which saves the client and Cassandra a request per entry. Not atomic
   * and need not be: each row is stamped with its own event's position. Callers keep a batch small
   * (`INDEX_BATCH`): Cassandra warns of unlogged batches over 10 partitions.
   */
  async writeIndexes(queue: string, entries: readonly IndexWrite[]): Promise<void> {
    const query = `INSERT INTO ${this.ks}.task_index (queue, task_id, seq, pos, client_id, hint) VALUES (?, ?, ?, ?, ?, ?)
       USING TTL ? AND TIMESTAMP ?`;
    const params = (e: IndexWrite) => [
      queue,
      e.taskId,
      long(e.seq),
      long(e.pos),
      e.clientId,
      e.delivered ? HINT_CODE.delivered : HINT_CODE.none,
      ttlUntil(e.expiresAt),
      long(e.pos),
    ];
    if (entries.length === 1) await this.client.execute(query, params(entries[0]!), this.idempotentWrite);
    else if (entries.length > 1)
      await this.client.batch(
        entries.map(e => ({ query, params: params(e) })),
        { ...this.idempotentWrite, logged: false },
      );
  }

  /** Where the task went (a delayed or dead row, or cancelled), by the event at `at`. */
  async writeHint(queue: string, taskId: string, hint: ParkedHint, at: number, expiresAt: number): Promise<void> {
    let time = 0;
    let part = 0;
    let ref = 0;
    if (hint.kind === "delayed") [time, part, ref] = [hint.dueAt, hint.part, hint.pos];
    else if (hint.kind === "dead") [time, part, ref] = [hint.hour, hint.part, hint.pos];
    await this.client.execute(
      `UPDATE ${this.ks}.task_index USING TTL ? AND TIMESTAMP ? SET hint = ?, hint_time = ?, hint_part = ?, hint_ref = ?
       WHERE queue = ? AND task_id = ?`,
      [ttlUntil(expiresAt), long(at), HINT_CODE[hint.kind], long(time), part, long(ref), queue, taskId],
      this.idempotentWrite,
    );
  }

  // ---- pending_handovers ---------------------------------------------------------------------

  /** Says whether the queue has workflow outcomes waiting to be handed over (for orphan adoption). */
  async markHandovers(ownerId: string, serviceId: string, queue: string, pending: boolean): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.pending_handovers (shard, queue, owner_id, service_id, pending) VALUES (?, ?, ?, ?, ?) USING TTL ?`,
      [handoverShard(queue), queue, ownerId, serviceId, pending, this.retentionSeconds],
      this.idempotentWrite,
    );
  }

  /** Every queue that said it has pending hand-overs. */
  async listPendingHandovers(): Promise<{ ownerId: string; serviceId: string }[]> {
    const out: { ownerId: string; serviceId: string }[] = [];
    for (let shard = 0; shard < HANDOVER_SHARDS; shard++) {
      const rs = await this.client.execute(
        `SELECT owner_id, service_id, pending FROM ${this.ks}.pending_handovers WHERE shard = ?`,
        [shard],
        { ...this.read, fetchSize: 5000 },
      );
      for (const row of rs.rows) {
        if (row["pending"] === true)
          out.push({ ownerId: row["owner_id"] as string, serviceId: row["service_id"] as string });
      }
    }
    return out;
  }

  // ---- owner_queues -------------------------------------------------------------------------

  /** Records that the owner has this queue; the row lives as long as a task added now. */
  async registerQueue(ownerId: string, serviceId: string): Promise<void> {
    await this.client.execute(
      `INSERT INTO ${this.ks}.owner_queues (owner_id, service_id, seen_at) VALUES (?, ?, ?) USING TTL ?`,
      [ownerId, serviceId, new Date(), this.retentionSeconds],
      this.idempotentWrite,
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

/** A row with only a mark (its insert not landed yet, or expired): counts as consumed. */
function placeholder(slot: number, part: number, key: { dueAt: number; pos: number }): Omit<ParkedTask, "consumed"> {
  return {
    slot,
    part,
    dueAt: key.dueAt,
    pos: key.pos,
    taskId: "",
    seq: 0,
    clientId: false,
    body: { value: { keyId: "", blob: Buffer.alloc(0) } },
    attempt: 0,
    maxAttempts: 0,
    expiresAt: 0,
  };
}

/** A task_index row as an entry (null: no row, or one holding only a hint that landed first). */
function indexEntryOf(row: types.Row | null | undefined): IndexEntry | null {
  if (!row || row["seq"] === null) return null;
  const code = (row["hint"] as number | null) ?? 0;
  const time = num(row["hint_time"]) ?? 0;
  const part = (row["hint_part"] as number | null) ?? 0;
  const ref = num(row["hint_ref"]) ?? 0;
  let hint: ParkedHint = { kind: "none" };
  if (code === HINT_CODE.delayed)
    hint = { kind: "delayed", minute: Math.floor(time / 60_000) * 60_000, part, dueAt: time, pos: ref };
  else if (code === HINT_CODE.dead) hint = { kind: "dead", hour: time, part, pos: ref };
  else if (code === HINT_CODE.cancelled) hint = { kind: "cancelled" };
  else if (code === HINT_CODE.delivered) hint = { kind: "delivered" };
  return {
    seq: num(row["seq"]) ?? 0,
    pos: num(row["pos"]) ?? 0,
    clientId: (row["client_id"] as boolean | null) ?? false,
    hint,
  };
}
