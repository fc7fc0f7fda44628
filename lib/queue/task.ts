/** The owner's view of one task, and the events of the queue log that build it. */
import type { Sealed } from "../codec";

export const enum EventKind {
  Add = 1,
  Lease = 2,
  Ack = 3,
  Carry = 4,
  Handed = 5,
  Update = 6,
  Release = 7,
  Dead = 8,
  Cancel = 9,
  Redrive = 10,
  Purge = 11,
}

export type TaskState = "ready" | "delayed" | "leased" | "handing-over" | "dead";

/** Stored as a number in full events. */
export const stateCode: Record<TaskState, number> = {
  ready: 1,
  delayed: 2,
  leased: 3,
  "handing-over": 4,
  dead: 5,
};
export const stateOfCode = (n: number | undefined): TaskState | undefined =>
  (Object.keys(stateCode) as TaskState[]).find(k => stateCode[k] === n);

export interface Task {
  id: string;
  seq: number;
  clientId: boolean;
  value: Sealed;
  token?: Sealed;
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
  progress?: Sealed;
  /** Sealed error of the last release (or of the ack that handed it over). */
  error?: Sealed;
  /** Why the task is dead: "MAX_ATTEMPTS" after too many deliveries. */
  reason?: string;
  cancelled: boolean;
  /** Sealed { result, error, meta } of the ack, kept until handed over. */
  result?: Sealed;
  /** Key ("range:bucket") of the log partition holding this task's last full event (add or carry). */
  fullBucket: string;
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

/** Notifications of the shard, turned into Moleculer events by the engine (metadata only, never values). */
export type TaskEventType =
  "added" | "delivered" | "completed" | "failed" | "released" | "dead" | "cancelled" | "progress" | "expired";

/** A full event (add or carry) describing the task's whole current state. */
export function fullEvent(task: Task, kind: EventKind.Add | EventKind.Carry): LogEvent {
  const leased = task.state === "leased";
  return {
    kind,
    taskId: task.id,
    seq: task.seq,
    clientId: task.clientId,
    value: task.value,
    token: task.token,
    attempt: task.attempt,
    maxAttempts: task.maxAttempts,
    state: stateCode[task.state],
    notBefore: task.notBefore,
    worker: leased ? task.worker : undefined,
    leaseUntil: leased ? task.leaseUntil : undefined,
    ttrMs: leased ? task.ttrMs : undefined,
    leaseStart: leased ? task.leaseStart : undefined,
    expiresAt: task.expiresAt,
    progress: task.progress,
    error: task.error,
    reason: task.reason,
    cancelled: task.cancelled || undefined,
    result: task.result,
  };
}
