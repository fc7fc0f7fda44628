/**
 * The requests a node runs on a queue's owner, and their wire form. On the owner (and when the
 * caller is on the owner) sealed values stay Buffers; only a call forwarded to another node turns
 * them into base64, here and nowhere else.
 */
import type { Sealed, SealContext } from "../codec";
import { queueKey, type QueueKey } from "./queue-key";
import type {
  AckOutcome,
  CancelOutcome,
  Delivery,
  PublicState,
  QueueStats,
  ReleaseOutcome,
  TaskStatus,
  UpdateOutcome,
} from "./task";

export type QueueRequest =
  | {
      op: "add";
      key: QueueKey;
      taskId: string;
      clientId: boolean;
      value: Sealed;
      token?: Sealed;
      expiresAt: number;
      notBefore?: number;
      maxAttempts: number;
      /** A retry of an add whose first attempt may have committed: check task_index first. */
      retry?: boolean;
    }
  | { op: "fetch"; key: QueueKey; worker: string; timeToRecoverMs: number; waitMs: number }
  | { op: "ack"; key: QueueKey; worker: string; taskId?: string; failed: boolean; outcome: unknown }
  | { op: "update"; key: QueueKey; worker: string; taskId?: string; progress?: unknown }
  | { op: "release"; key: QueueKey; worker: string; taskId?: string; delayMs: number; error?: unknown }
  | { op: "cancel"; key: QueueKey; taskId: string }
  | { op: "dead"; key: QueueKey; limit: number }
  | { op: "redrive"; key: QueueKey; taskIds?: string[] }
  | { op: "purge"; key: QueueKey }
  | { op: "status"; key: QueueKey; taskId: string }
  | { op: "stats"; key: QueueKey }
  | { op: "tasks"; key: QueueKey; state?: PublicState; offset: number; limit: number }
  | { op: "inspect"; key: QueueKey; taskId: string };

/** A dead letter as the owner gives it (its error still sealed). */
export interface DeadEntry {
  taskId: string;
  attempt: number;
  reason?: string;
  error?: Sealed;
  expiresAt: number;
}

export interface Inspected {
  status: TaskStatus;
  value?: Sealed;
  progress?: Sealed;
  error?: Sealed;
}

/** What each operation answers on the owner. */
export interface QueueResults {
  add: true;
  fetch: Delivery | null;
  ack: AckOutcome;
  update: UpdateOutcome;
  release: ReleaseOutcome;
  cancel: CancelOutcome;
  dead: DeadEntry[];
  redrive: number;
  purge: number;
  status: { status: TaskStatus; progress?: Sealed };
  stats: QueueStats;
  tasks: { total: number; tasks: TaskStatus[] };
  inspect: Inspected;
}

export type ResultOf<R extends QueueRequest> = QueueResults[R["op"]];

// ---- the wire form ---------------------------------------------------------------------------------

export interface WireSealed {
  keyId: string;
  blob: string;
}

const toWire = (s: Sealed): WireSealed => ({ keyId: s.keyId, blob: s.blob.toString("base64") });
const fromWire = (w: WireSealed): Sealed => ({ keyId: String(w.keyId), blob: Buffer.from(String(w.blob), "base64") });
const opt = <A, B>(v: A | undefined, f: (a: A) => B): B | undefined =>
  v === undefined || v === null ? undefined : f(v);

/**
 * A request as JSON can carry it: the queue as its two parts, sealed values as base64; `placed`
 * when the sender chose the receiver by placement (it may take the queue over).
 */
export type WireRequest = Record<string, unknown> & {
  op: QueueRequest["op"];
  ownerId: string;
  serviceId: string;
  placed?: boolean;
};

export function requestToWire(r: QueueRequest): WireRequest {
  const { key, ...rest } = r;
  const wire: Record<string, unknown> = { ...rest, ownerId: key.ownerId, serviceId: key.serviceId };
  if (r.op === "add") {
    wire["value"] = toWire(r.value);
    wire["token"] = opt(r.token, toWire);
  }
  return wire as WireRequest;
}

export function requestFromWire(w: WireRequest): QueueRequest {
  const { ownerId, serviceId, placed: _placed, ...rest } = w;
  const r = { ...rest, key: queueKey(String(ownerId), String(serviceId)) } as Record<string, unknown>;
  if (w.op === "add") {
    r["value"] = fromWire(w["value"] as WireSealed);
    r["token"] = opt(w["token"] as WireSealed | undefined, fromWire);
  }
  return r as unknown as QueueRequest;
}

export function resultToWire(op: QueueRequest["op"], result: unknown): unknown {
  if (op === "fetch") {
    const d = result as Delivery | null;
    return d && { ...d, value: toWire(d.value) };
  }
  if (op === "dead") return (result as DeadEntry[]).map(d => ({ ...d, error: opt(d.error, toWire) }));
  if (op === "status") {
    const st = result as QueueResults["status"];
    return { status: st.status, progress: opt(st.progress, toWire) };
  }
  if (op === "inspect") {
    const i = result as Inspected;
    return {
      status: i.status,
      value: opt(i.value, toWire),
      progress: opt(i.progress, toWire),
      error: opt(i.error, toWire),
    };
  }
  return result;
}

export function resultFromWire(op: QueueRequest["op"], wire: unknown): unknown {
  if (op === "fetch") {
    const d = wire as (Omit<Delivery, "value"> & { value: WireSealed }) | null;
    return d && { ...d, value: fromWire(d.value) };
  }
  if (op === "dead") {
    return (wire as (Omit<DeadEntry, "error"> & { error?: WireSealed })[]).map(d => ({
      ...d,
      error: opt(d.error, fromWire),
    }));
  }
  if (op === "status") {
    const st = wire as { status: TaskStatus; progress?: WireSealed };
    return { status: st.status, progress: opt(st.progress, fromWire) };
  }
  if (op === "inspect") {
    const i = wire as { status: TaskStatus; value?: WireSealed; progress?: WireSealed; error?: WireSealed };
    return {
      status: i.status,
      value: opt(i.value, fromWire),
      progress: opt(i.progress, fromWire),
      error: opt(i.error, fromWire),
    };
  }
  return wire;
}

/** Where a sealed field belongs: bound into its ciphertext. */
export function sealContext(key: QueueKey, taskId: string, field: string): SealContext {
  return { ownerId: key.ownerId, queue: key.serviceId, taskId, field };
}
