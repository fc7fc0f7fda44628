/**
 * The snapshot a checkpoint holds: the owner's state without values. It is JSON, split into chunks
 * of at most CHUNK_TASKS in-flight tasks (rows of queue_checkpoint); chunk 0 holds everything else.
 * Only JSON.parse reads it back: nothing in it is ever evaluated.
 */
import type { Task, TaskState } from "./task";

/** An older range that still holds part of the backlog: its partitions run from 0 to lastBucket. */
export interface Segment {
  range: number;
  lastBucket: number;
}

export interface BacklogSnapshot {
  /** Position of the oldest undelivered ready source (every source before it is delivered, cancelled or purged). */
  cursor: number;
  /** Waiting tasks in the backlog. */
  count: number;
  /** Sources before this position were purged. */
  purgeBound: number;
  /** Older ranges the backlog still spans, oldest first. */
  segments: Segment[];
  /** When the partitions from the cursor's on were opened: [first position, ms]. */
  opened: [number, number][];
}

/** The due cursor: the last delayed task delivered, in (minute, part, due time, position) order. */
export interface DueKey {
  minute: number;
  part: number;
  dueAt: number;
  pos: number;
}

/** A minute (due) or hour (dead) partition group: rows written so far (they pick the part) and rows still live. */
export interface SlotCount {
  slot: number;
  written: number;
  count: number;
}

export interface ParkedSnapshot {
  dueCursor: DueKey | null;
  due: SlotCount[];
  dead: SlotCount[];
}

export interface Snapshot {
  nextSeq: number;
  backlog: BacklogSnapshot;
  parked: ParkedSnapshot;
  /** Leased, returned (ready again) and handing-over tasks, without bodies. */
  inflight: Task[];
  /** The last task each recent worker acked, oldest first. */
  lastAcked: [string, string][];
  /** Completions per 10 s slot: the slot of the last entry, and the counts. */
  completions: { slot: number; counts: number[] };
}

export const CHUNK_TASKS = 400;

type TaskTuple = [
  id: string,
  seq: number,
  src: number,
  flags: number,
  attempt: number,
  maxAttempts: number,
  state: number,
  expiresAt: number,
  worker: string | null,
  leaseUntil: number | null,
  ttrMs: number | null,
  leaseStart: number | null,
  progressPos: number | null,
  errorPos: number | null,
  resultPos: number | null,
  reason: string | null,
];

const STATES: TaskState[] = ["ready", "delayed", "leased", "handing-over", "dead"];

function toTuple(t: Task): TaskTuple {
  const flags = (t.hasToken ? 1 : 0) | (t.clientId ? 2 : 0) | (t.cancelled ? 4 : 0);
  return [
    t.id,
    t.seq,
    t.src,
    flags,
    t.attempt,
    t.maxAttempts,
    STATES.indexOf(t.state),
    t.expiresAt,
    t.worker ?? null,
    t.leaseUntil ?? null,
    t.ttrMs ?? null,
    t.leaseStart ?? null,
    t.progressPos ?? null,
    t.errorPos ?? null,
    t.resultPos ?? null,
    t.reason ?? null,
  ];
}

function fromTuple(x: TaskTuple): Task {
  const [id, seq, src, flags, attempt, maxAttempts, state, expiresAt, worker, leaseUntil, ttrMs, leaseStart] = x;
  const [progressPos, errorPos, resultPos, reason] = x.slice(12) as [
    number | null,
    number | null,
    number | null,
    string | null,
  ];
  return {
    id,
    seq,
    src,
    clientId: (flags & 2) !== 0,
    hasToken: (flags & 1) !== 0,
    cancelled: (flags & 4) !== 0,
    attempt,
    maxAttempts,
    state: STATES[state] ?? "ready",
    expiresAt,
    worker: worker ?? undefined,
    leaseUntil: leaseUntil ?? undefined,
    ttrMs: ttrMs ?? undefined,
    leaseStart: leaseStart ?? undefined,
    progressPos: progressPos ?? undefined,
    errorPos: errorPos ?? undefined,
    resultPos: resultPos ?? undefined,
    reason: reason ?? undefined,
  };
}

/** The snapshot as chunk blobs, chunk 0 first. */
export function encodeSnapshot(s: Snapshot): Buffer[] {
  const tuples = s.inflight.map(toTuple);
  const rest = { ...s, inflight: tuples.slice(0, CHUNK_TASKS) };
  const chunks = [Buffer.from(JSON.stringify(rest), "utf8")];
  for (let i = CHUNK_TASKS; i < tuples.length; i += CHUNK_TASKS) {
    chunks.push(Buffer.from(JSON.stringify(tuples.slice(i, i + CHUNK_TASKS)), "utf8"));
  }
  return chunks;
}

/** Rebuilds a snapshot from all its chunks, in order. Throws on anything malformed. */
export function decodeSnapshot(chunks: Buffer[]): Snapshot {
  if (chunks.length === 0) throw new Error("a checkpoint without chunks");
  const head = JSON.parse(chunks[0]!.toString("utf8")) as Omit<Snapshot, "inflight"> & { inflight: TaskTuple[] };
  const tuples = [...head.inflight];
  for (const c of chunks.slice(1)) tuples.push(...(JSON.parse(c.toString("utf8")) as TaskTuple[]));
  if (typeof head.nextSeq !== "number" || !head.backlog || !head.parked) throw new Error("a malformed checkpoint");
  return { ...head, inflight: tuples.map(fromTuple) };
}
