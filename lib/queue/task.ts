/** The owner's view of one task, the events of the queue log, and log positions. */
import type { Sealed } from "../codec";

export const enum EventKind {
  /** A new task, with its full state (its source). Ready, or delayed when notBefore is in the future. */
  Add = 1,
  /** The task went to a worker. */
  Lease = 2,
  /** The worker acked (or a cancelled task ended); carries the sealed outcome for tasks with a token. */
  Ack = 3,
  /** The task's full state again (a new source): a due task delivered (leased), or a dead one redriven (ready). */
  Carry = 4,
  /** The workflow accepted the outcome. */
  Handed = 5,
  /** Heartbeat / progress. */
  Update = 6,
  /** The worker gave the task back: returned (ready) or delayed. */
  Release = 7,
  /** Out of attempts: moved to the dead letters. */
  Dead = 8,
  Cancel = 9,
  /** Everything waiting, delayed or dead before this event's position is gone. */
  Purge = 11,
}

export type TaskState = "ready" | "delayed" | "leased" | "handing-over" | "dead";

/** Stored as a number in events. */
export const stateCode: Record<TaskState, number> = {
  ready: 1,
  delayed: 2,
  leased: 3,
  "handing-over": 4,
  dead: 5,
};
export const stateOfCode = (n: number | undefined): TaskState | undefined =>
  (Object.keys(stateCode) as TaskState[]).find(k => stateCode[k] === n);

/** The bits of an event's `flags`. */
export const enum EventFlag {
  /** The task carries a workflow token (its source holds it). */
  HasToken = 1,
  /** The caller chose the task id. */
  ClientId = 2,
  /** The task was flagged cancelled while it ran. */
  Cancelled = 4,
  /** A lease of a task taken from the backlog (not one already in flight). */
  FromBacklog = 8,
}

// ---- positions -------------------------------------------------------------------------------------

const RANGE_UNIT = 2 ** 30;
const BUCKET_UNIT = 2 ** 14;
/** Partitions per range at most. */
export const MAX_BUCKETS = RANGE_UNIT / BUCKET_UNIT;

/** A log partition: (queue, range_id, bucket). */
export interface BucketRef {
  range: number;
  bucket: number;
}

/** One number per event, growing with log order across partitions and ranges. */
export function position(range: number, bucket: number, pos: number): number {
  return range * RANGE_UNIT + bucket * BUCKET_UNIT + pos;
}

export function splitPosition(p: number): { range: number; bucket: number; pos: number } {
  const range = Math.floor(p / RANGE_UNIT);
  const rest = p - range * RANGE_UNIT;
  const bucket = Math.floor(rest / BUCKET_UNIT);
  return { range, bucket, pos: rest - bucket * BUCKET_UNIT };
}

// ---- tasks -------------------------------------------------------------------------------------------

/** What a task's source holds that is too big to keep for every task: its sealed value and token. */
export interface TaskBody {
  value: Sealed;
  token?: Sealed;
}

export interface Task {
  id: string;
  seq: number;
  clientId: boolean;
  /** Position of the event holding the task's body (its add or latest carry). */
  src: number;
  /** The body, when in memory; loaded from `src` when needed. */
  body?: TaskBody;
  hasToken: boolean;
  attempt: number;
  /** 0 = unlimited. */
  maxAttempts: number;
  state: TaskState;
  /** Not delivered before this time (ms); for delayed tasks. */
  notBefore?: number;
  worker?: string;
  leaseUntil?: number;
  /** The current lease's timeToRecover, by which an update extends it. */
  ttrMs?: number;
  /** When the current lease began; extensions stop at leaseStart + maxLeaseMs. */
  leaseStart?: number;
  expiresAt: number;
  /** Latest sealed progress, or where it is in the log. */
  progress?: Sealed;
  progressPos?: number;
  /** Sealed error of the last release, or where it is in the log. */
  error?: Sealed;
  errorPos?: number;
  /** Why the task is dead: "MAX_ATTEMPTS" after too many deliveries. */
  reason?: string;
  cancelled: boolean;
  /** Sealed { result, error, meta } of the ack, kept until handed over, or where it is in the log. */
  result?: Sealed;
  resultPos?: number;
}

/** One row of queue_log. Fields absent for a kind are left unset (never null). */
export interface LogEvent {
  kind: EventKind;
  taskId: string;
  seq?: number;
  clientId?: boolean;
  value?: Sealed;
  token?: Sealed;
  attempt?: number;
  maxAttempts?: number;
  state?: number;
  notBefore?: number;
  worker?: string;
  leaseUntil?: number;
  ttrMs?: number;
  leaseStart?: number;
  expiresAt: number;
  progress?: Sealed;
  error?: Sealed;
  reason?: string;
  cancelled?: boolean;
  result?: Sealed;
  /** The task's source (for events that do not carry the body). */
  src?: number;
  /** The parked row (due or dead) this event consumes or creates, or a cancelled backlog position. */
  ref?: number;
  refPart?: number;
  /** The parked row's time: a due time, or the hour of a dead row (ms). */
  refTime?: number;
  flags?: number;
}

export interface StoredEvent extends LogEvent {
  /** The event's log position. */
  at: number;
}

/** A delayed or dead task in its own table: the task's full state at the time it was parked. */
export interface ParkedTask {
  /** The partition: due minute, or dead hour (ms of its start). */
  slot: number;
  part: number;
  /** Clustering: due time (due rows; 0 for dead rows) and the position of the event that parked it. */
  dueAt: number;
  pos: number;
  taskId: string;
  seq: number;
  clientId: boolean;
  body: TaskBody;
  attempt: number;
  maxAttempts: number;
  expiresAt: number;
  error?: Sealed;
  reason?: string;
  progress?: Sealed;
  /** Consumed out of order (a cancel; for dead rows also a redrive). */
  consumed: boolean;
}

/** What the owner hands to the entry node for a fetch; the value is still sealed. */
export interface Delivery {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled: boolean;
  value: Sealed;
}

export type RefusalReason = "NO_TASK" | "LEASE_LOST";

export type AckOutcome = { ok: true; taskId: string } | { ok: false; reason: RefusalReason; taskId?: string };

export type UpdateOutcome =
  | { ok: true; taskId: string; attempt: number; leaseUntil: number; cancelled: boolean }
  | { ok: false; reason: RefusalReason; taskId?: string };

export type ReleaseOutcome =
  | { ok: true; taskId: string; state: "ready" | "delayed" | "dead" | "cancelled" }
  | { ok: false; reason: RefusalReason; taskId?: string };

export type CancelOutcome = { ok: boolean; state: PublicState; taskId: string };

export type PublicState = "waiting" | "delayed" | "leased" | "handing-over" | "dead" | "done" | "cancelled" | "unknown";

export interface TaskStatus {
  taskId: string;
  state: PublicState;
  attempt?: number;
  maxAttempts?: number;
  worker?: string;
  leaseUntil?: number;
  notBefore?: number;
  cancelled?: boolean;
  reason?: string;
  expiresAt?: number;
}

export interface QueueStats {
  ready: number;
  delayed: number;
  inFlight: number;
  dead: number;
  handingOver: number;
  /** Age in ms of the oldest task waiting to be delivered (0 when none). */
  oldestWaitingMs: number;
  /** Workers holding a lease now, with their task and deadline. */
  workers: { workerId: string; taskId: string; leaseUntil: number; attempt: number }[];
  /** Tasks completed (acked) per 10-second slot over the last 5 minutes, oldest first, on this owner. */
  completedPer10s: number[];
}

/** Notifications of the queue, turned into Moleculer events by the engine (metadata only, never values). */
export type TaskEventType =
  "added" | "delivered" | "completed" | "failed" | "released" | "dead" | "cancelled" | "progress" | "expired";

export function flagsOf(t: Pick<Task, "hasToken" | "clientId" | "cancelled">): number {
  return (
    (t.hasToken ? EventFlag.HasToken : 0) |
    (t.clientId ? EventFlag.ClientId : 0) |
    (t.cancelled ? EventFlag.Cancelled : 0)
  );
}
