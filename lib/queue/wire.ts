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

/**
 * An ack's outcome, an update's progress, a release's error, a cancellation: sealed where it is
 * needed. On the owner it is sealed for the task it lands on (`taskId` given), and only when kept;
 * before a forward the entry node seals it (no `taskId`: bound to the task the request names, or to
 * "*"), so only ciphertext leaves the entry node. Called again, it answers the same ciphertext.
 */
export type LateSeal = (taskId?: string) => Promise<Sealed>;

/** The task-id slot of a field sealed before its task was known (see ARCHITECTURE, Security). */
export const ANY_TASK = "*";

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
  | {
      op: "ack";
      key: QueueKey;
      worker: string;
      taskId?: string;
      failed: boolean;
      outcome: LateSeal;
      /** Then fetch the worker's next task (see QueueState.ackThenFetch). */
      next?: { timeToRecoverMs: number };
    }
  | { op: "update"; key: QueueKey; worker: string; taskId?: string; progress?: LateSeal }
  | { op: "release"; key: QueueKey; worker: string; taskId?: string; delayMs: number; error?: LateSeal }
  | { op: "cancel"; key: QueueKey; taskId: string; outcome: LateSeal }
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
  /** `next` only when the request asked for it (an owner of an older version leaves it out). */
  ack: AckOutcome & { next?: Delivery | null };
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

/** The fields of each operation that are sealed late (see LateSeal). */
const LATE_FIELDS: Partial<Record<QueueRequest["op"], string>> = {
  ack: "outcome",
  update: "progress",
  release: "error",
  cancel: "outcome",
};

/** The wire form of a request; fields sealed late are sealed now, on the entry node. */
export async function requestToWire(r: QueueRequest): Promise<WireRequest> {
  const { key, ...rest } = r;
  const wire: Record<string, unknown> = { ...rest, ownerId: key.ownerId, serviceId: key.serviceId };
  if (r.op === "add") {
    wire["value"] = toWire(r.value);
    wire["token"] = opt(r.token, toWire);
  }
  const late = LATE_FIELDS[r.op];
  if (late !== undefined) {
    const seal = (r as Record<string, unknown>)[late] as LateSeal | undefined;
    wire[late] = seal ? toWire(await seal()) : undefined;
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
  const late = LATE_FIELDS[w.op];
  if (late !== undefined) {
    const sealed = opt(w[late] as WireSealed | undefined, fromWire);
    r[late] = sealed ? ((() => Promise.resolve(sealed)) satisfies LateSeal) : undefined;
  }
  return r as unknown as QueueRequest;
}

const deliveryToWire = (d: Delivery | null) => d && { ...d, value: toWire(d.value) };
const deliveryFromWire = (d: (Omit<Delivery, "value"> & { value: WireSealed }) | null): Delivery | null =>
  d && { ...d, value: fromWire(d.value) };

export function resultToWire(op: QueueRequest["op"], result: unknown): unknown {
  if (op === "fetch") return deliveryToWire(result as Delivery | null);
  if (op === "ack") {
    const a = result as QueueResults["ack"];
    return a.next === undefined ? a : { ...a, next: deliveryToWire(a.next) };
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
  if (op === "fetch") return deliveryFromWire(wire as Parameters<typeof deliveryFromWire>[0]);
  if (op === "ack") {
    const a = wire as AckOutcome & { next?: Parameters<typeof deliveryFromWire>[0] };
    return a.next === undefined ? a : { ...a, next: deliveryFromWire(a.next) };
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

/**
 * A late seal of `value` for the request's field: on the owner for the task it lands on, before a
 * forward for `namedTask` (or "*" when the request names none); the forward's seal is made once.
 */
export function lateSeal(
  seal: (context: SealContext) => Promise<Sealed>,
  key: QueueKey,
  field: string,
  namedTask: string | undefined,
): LateSeal {
  let early: Promise<Sealed> | undefined;
  return taskId => {
    if (taskId !== undefined) return seal(sealContext(key, taskId, field));
    early ??= seal(sealContext(key, namedTask ?? ANY_TASK, field));
    return early;
  };
}

/**
 * Opens a sealed field of task `taskId`: bound to the task, or (sealed on an entry node before the
 * task was known) to "*".
 */
export async function openField(
  open: (context: SealContext, sealed: Sealed) => Promise<Buffer>,
  key: QueueKey,
  taskId: string,
  field: string,
  sealed: Sealed,
): Promise<Buffer> {
  try {
    return await open(sealContext(key, taskId, field), sealed);
  } catch (err) {
    if ((err as { type?: string }).type !== "DECRYPTION_FAILED" || taskId === ANY_TASK) throw err;
    return open(sealContext(key, ANY_TASK, field), sealed);
  }
}

/** Where a sealed field belongs: bound into its ciphertext. */
export function sealContext(key: QueueKey, taskId: string, field: string): SealContext {
  return { ownerId: key.ownerId, queue: key.serviceId, taskId, field };
}
