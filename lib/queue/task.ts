/** The owner's view of one task, and the events of the queue log that build it. */
import type { Sealed } from "../codec";

export const enum EventKind {
  Add = 1,
  Lease = 2,
  Ack = 3,
  Carry = 4,
  Handed = 5,
}

export type TaskState = "ready" | "leased" | "handing-over";

export interface Task {
  id: string;
  seq: number;
  clientId: boolean;
  value: Sealed;
  token?: Sealed;
  attempt: number;
  state: TaskState;
  worker?: string;
  leaseUntil?: number;
  expiresAt: number;
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
  worker?: string;
  leaseUntil?: number;
  expiresAt: number;
  result?: Sealed;
}

/** What the owner hands to the entry node for a fetch; the value is still sealed. */
export interface Delivery {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: Sealed;
}

export type AckOutcome =
  { ok: true; taskId: string } | { ok: false; reason: "NO_TASK" | "LEASE_LOST"; taskId?: string };

/** A full event (add or carry) describing the task's whole current state. */
export function fullEvent(task: Task, kind: EventKind.Add | EventKind.Carry): LogEvent {
  return {
    kind,
    taskId: task.id,
    seq: task.seq,
    clientId: task.clientId,
    value: task.value,
    token: task.token,
    attempt: task.attempt,
    worker: task.state === "leased" ? task.worker : undefined,
    leaseUntil: task.state === "leased" ? task.leaseUntil : undefined,
    expiresAt: task.expiresAt,
    result: task.state === "handing-over" ? task.result : undefined,
  };
}
