/**
 * The owner's in-memory state of one queue, and the only place where tasks are claimed, acked,
 * released, cancelled and handed over. Every change is made in memory and appended to the event
 * log in the same synchronous step, so log order equals memory order; a caller is answered only
 * once its event is committed. If any commit fails, the whole shard is abandoned
 * (see docs/ARCHITECTURE.md).
 */
import type { Sealed } from "../codec";
import { DeadlineHeap } from "./deadline-heap";
import type { EventLog } from "./event-log";
import { bucketKey, type OwnerLease } from "./owner-lease";
import type { BucketRef, StoredEvent } from "./store";
import {
  EventKind,
  fullEvent,
  stateCode,
  stateOfCode,
  type AckOutcome,
  type Delivery,
  type PublicState,
  type QueueStats,
  type ReleaseOutcome,
  type Task,
  type TaskEventType,
  type TaskStatus,
  type UpdateOutcome,
} from "./task";

export interface NewTask {
  taskId: string;
  clientId: boolean;
  value: Sealed;
  token?: Sealed;
  expiresAt: number;
  notBefore?: number;
  maxAttempts: number;
}

export interface ShardHooks {
  /** A task with a workflow token has ended: its outcome must be handed over. */
  handover(task: Task): void;
  /** After a commit: something happened to a task (metadata only). */
  notify(type: TaskEventType, task: Task, extra?: Record<string, unknown>): void;
}

export interface ShardLimits {
  maxOpenBuckets: number;
  bucketSize: number;
  /** Longest total lease a worker can reach by updates. */
  maxLeaseMs: number;
  retentionMs: number;
}

/** What a takeover learns from the log. */
export interface Recovered {
  tasks: Map<string, Task>;
  maxSeq: number;
  /** The last task each worker acked, so that a retried ack with that task id answers true. */
  lastAcked: Map<string, string>;
  /** Tasks that ended recently, for `status`. */
  ended: Map<string, PublicState>;
}

const REMEMBERED = 10_000;
const THROUGHPUT_SLOT_MS = 10_000;
const THROUGHPUT_SLOTS = 30;

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > REMEMBERED) map.delete(map.keys().next().value as string);
}

function clearLease(t: Task): void {
  t.worker = undefined;
  t.leaseUntil = undefined;
  t.ttrMs = undefined;
  t.leaseStart = undefined;
}

/** Rebuilds the live tasks from the events of the open partitions, read in log order. */
export function foldEvents(partitions: { ref: BucketRef; events: StoredEvent[] }[], now = Date.now()): Recovered {
  const tasks = new Map<string, Task>();
  const lastAcked = new Map<string, string>();
  const ended = new Map<string, PublicState>();
  let maxSeq = 0;
  const end = (t: Task, result: Sealed | undefined, as: PublicState) => {
    if (result) {
      t.state = "handing-over";
      t.result = result;
      clearLease(t);
    } else {
      tasks.delete(t.id);
      remember(ended, t.id, as);
    }
  };
  for (const { ref, events } of partitions) {
    const key = bucketKey(ref);
    for (const e of events) {
      if (e.seq !== undefined && e.seq > maxSeq) maxSeq = e.seq;
      const t = tasks.get(e.taskId);
      switch (e.kind) {
        case EventKind.Add:
        case EventKind.Carry: {
          if (!e.value || e.seq === undefined) break;
          const state = stateOfCode(e.state) ?? (e.result ? "handing-over" : e.worker ? "leased" : "ready");
          tasks.set(e.taskId, {
            id: e.taskId,
            seq: e.seq,
            clientId: e.clientId ?? false,
            value: e.value,
            token: e.token,
            attempt: e.attempt ?? 0,
            maxAttempts: e.maxAttempts ?? 0,
            state,
            notBefore: e.notBefore,
            worker: state === "leased" ? e.worker : undefined,
            leaseUntil: state === "leased" ? e.leaseUntil : undefined,
            ttrMs: state === "leased" ? e.ttrMs : undefined,
            leaseStart: state === "leased" ? e.leaseStart : undefined,
            expiresAt: e.expiresAt,
            progress: e.progress,
            error: e.error,
            reason: e.reason,
            cancelled: e.cancelled ?? false,
            result: e.result,
            fullBucket: key,
          });
          break;
        }
        case EventKind.Lease:
          if (!t) break;
          t.state = "leased";
          t.attempt = e.attempt ?? t.attempt;
          t.worker = e.worker;
          t.leaseUntil = e.leaseUntil;
          t.ttrMs = e.ttrMs;
          t.leaseStart = e.leaseStart;
          t.notBefore = undefined;
          break;
        case EventKind.Update:
          if (!t) break;
          t.leaseUntil = e.leaseUntil ?? t.leaseUntil;
          if (e.progress) t.progress = e.progress;
          break;
        case EventKind.Release:
          if (!t) break;
          clearLease(t);
          t.state = stateOfCode(e.state) ?? "ready";
          t.notBefore = e.notBefore;
          if (e.error) t.error = e.error;
          break;
        case EventKind.Dead:
          if (!t) break;
          clearLease(t);
          t.state = "dead";
          t.reason = e.reason;
          if (e.error) t.error = e.error;
          break;
        case EventKind.Cancel:
          if (!t) break;
          t.cancelled = true;
          if (t.state === "leased") t.result = e.result;
          else end(t, e.result, "cancelled");
          break;
        case EventKind.Redrive:
          if (!t) break;
          t.state = "ready";
          t.attempt = 0;
          t.reason = undefined;
          t.error = undefined;
          break;
        case EventKind.Purge: {
          const upTo = e.seq ?? 0;
          for (const [id, p] of tasks) {
            if (p.seq <= upTo && (p.state === "ready" || p.state === "delayed" || p.state === "dead")) {
              tasks.delete(id);
              remember(ended, id, "cancelled");
            }
          }
          break;
        }
        case EventKind.Ack:
          if (e.worker !== undefined) lastAcked.set(e.worker, e.taskId);
          if (!t) break;
          end(t, e.result, t.cancelled ? "cancelled" : "done");
          break;
        case EventKind.Handed:
          if (!t) break;
          tasks.delete(t.id);
          remember(ended, t.id, t.cancelled ? "cancelled" : "done");
          break;
      }
    }
  }
  for (const [id, t] of tasks) {
    if (t.expiresAt <= now) {
      tasks.delete(id);
      remember(ended, id, "unknown");
    }
  }
  return { tasks, maxSeq, lastAcked, ended };
}

interface Waiter {
  worker: string;
  ttrMs: number;
  resolve: (d: Promise<Delivery | null> | Delivery | null) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QueueShard {
  private readonly tasks = new Map<string, Task>();
  private ready: Task[] = [];
  private readyHead = 0;
  private readonly leases = new DeadlineHeap<Task>();
  private readonly delayed = new DeadlineHeap<Task>();
  private readonly byWorker = new Map<string, Task>();
  private readonly inflightLease = new Map<string, Promise<Delivery>>();
  /** Workers whose task went to another worker, so that their ack can say LEASE_LOST. */
  private readonly lostBy = new Map<string, string>();
  private readonly lastAcked: Map<string, string>;
  /** Acks appended but not yet committed, by worker. */
  private readonly pendingAcks = new Map<string, { taskId: string; committed: Promise<unknown> }>();
  private readonly ended: Map<string, PublicState>;
  private readonly liveFull = new Map<string, number>();
  private readonly handoverWaiting = new Set<Task>();
  /** Adds not yet committed, so that a duplicate add waits for the original's commit. */
  private readonly addCommits = new Map<string, Promise<void>>();
  private waiters: Waiter[] = [];
  private wakeTimer: NodeJS.Timeout | undefined;
  private nextSeq: number;
  private maintaining = false;
  private maintainAgain = false;
  private closed = false;
  /** Completions per 10 s slot, a ring of 30 slots (5 minutes), for the throughput chart. */
  private readonly completions = new Array<number>(THROUGHPUT_SLOTS).fill(0);
  private completionSlot = Math.floor(Date.now() / THROUGHPUT_SLOT_MS);
  lastUsed = Date.now();

  constructor(
    readonly queue: string,
    private readonly log: EventLog,
    private readonly lease: OwnerLease,
    private readonly limits: ShardLimits,
    recovered: Recovered,
    private readonly hooks: ShardHooks,
  ) {
    this.nextSeq = recovered.maxSeq + 1;
    this.lastAcked = recovered.lastAcked;
    this.ended = recovered.ended;
    const sorted = [...recovered.tasks.values()].sort((a, b) => a.seq - b.seq);
    for (const t of sorted) this.track(t);
  }

  private track(t: Task): void {
    this.tasks.set(t.id, t);
    this.liveFull.set(t.fullBucket, (this.liveFull.get(t.fullBucket) ?? 0) + 1);
    this.enqueue(t);
    if (t.state === "leased" && t.worker !== undefined && t.leaseUntil !== undefined) {
      this.byWorker.set(t.worker, t);
      this.leases.push(t.leaseUntil, t);
    } else if (t.state === "handing-over") this.handoverWaiting.add(t);
  }

  /** Puts a ready or delayed task where fetch will find it. */
  private enqueue(t: Task): void {
    if (t.state === "ready") this.ready.push(t);
    else if (t.state === "delayed") this.delayed.push(t.notBefore ?? 0, t);
  }

  private remove(t: Task, as: PublicState): void {
    if (this.tasks.get(t.id) !== t) return;
    this.tasks.delete(t.id);
    remember(this.ended, t.id, as);
    const n = (this.liveFull.get(t.fullBucket) ?? 1) - 1;
    if (n > 0) this.liveFull.set(t.fullBucket, n);
    else this.liveFull.delete(t.fullBucket);
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    this.handoverWaiting.delete(t);
  }

  /** Ends a task: handing over its sealed outcome when it has one, else forgetting it. */
  private end(t: Task, result: Sealed | undefined, as: PublicState): void {
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    if (result) {
      t.state = "handing-over";
      t.result = result;
      clearLease(t);
      this.handoverWaiting.add(t);
    } else {
      this.remove(t, as);
    }
  }

  private moveFull(t: Task, to: BucketRef): void {
    if (this.tasks.get(t.id) !== t) return;
    const from = t.fullBucket;
    const key = bucketKey(to);
    if (from === key) return;
    const n = (this.liveFull.get(from) ?? 1) - 1;
    if (n > 0) this.liveFull.set(from, n);
    else this.liveFull.delete(from);
    this.liveFull.set(key, (this.liveFull.get(key) ?? 0) + 1);
    t.fullBucket = key;
  }

  /** Tasks recovered in the hand-over state, to be handed over again. */
  pendingHandovers(): Task[] {
    return [...this.handoverWaiting];
  }

  /** All live tasks, for the takeover's carry. */
  liveTasks(): Task[] {
    return [...this.tasks.values()];
  }

  has(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  get size(): number {
    return this.tasks.size;
  }

  /** Stops long polls and timers; called when the queue is abandoned or released. */
  close(err: Error): void {
    this.closed = true;
    clearTimeout(this.wakeTimer);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  // ---- add ---------------------------------------------------------------------------------------

  /** Appends a new task. Resolves once its add event is committed. */
  add(input: NewTask, now = Date.now()): Promise<void> {
    this.lastUsed = now;
    if (this.tasks.has(input.taskId)) return this.addCommits.get(input.taskId) ?? Promise.resolve();
    const delayed = input.notBefore !== undefined && input.notBefore > now;
    const t: Task = {
      id: input.taskId,
      seq: this.nextSeq++,
      clientId: input.clientId,
      value: input.value,
      token: input.token,
      attempt: 0,
      maxAttempts: input.maxAttempts,
      state: delayed ? "delayed" : "ready",
      notBefore: delayed ? input.notBefore : undefined,
      expiresAt: input.expiresAt,
      cancelled: false,
      fullBucket: bucketKey(this.log.currentBucket),
    };
    this.tasks.set(t.id, t);
    this.liveFull.set(t.fullBucket, (this.liveFull.get(t.fullBucket) ?? 0) + 1);
    this.enqueue(t);
    const done = this.log.append(fullEvent(t, EventKind.Add)).then(ref => {
      this.moveFull(t, ref);
      this.hooks.notify("added", t);
    });
    this.addCommits.set(t.id, done);
    const clear = () => this.addCommits.delete(t.id);
    done.then(clear, clear);
    this.dispatch();
    return done;
  }

  // ---- fetch -------------------------------------------------------------------------------------

  /**
   * The worker's task: the one it holds while its lease is valid, else the next claimable one,
   * else (with waitMs) the first one that becomes claimable within waitMs, else null.
   */
  fetch(worker: string, timeToRecoverMs: number, waitMs = 0, now = Date.now()): Promise<Delivery | null> {
    this.lastUsed = now;
    // A claim for this worker is being committed: once it is, answer as a re-fetch (lease still
    // valid, fence confirmed), never with a delivery that may have gone stale meanwhile.
    const inflight = this.inflightLease.get(worker);
    if (inflight) return inflight.then(() => this.fetch(worker, timeToRecoverMs, waitMs));
    const held = this.byWorker.get(worker);
    if (held) {
      if ((held.leaseUntil ?? 0) <= now) return this.claimOrEnd(held, worker, timeToRecoverMs, now, waitMs);
      // Answering from memory is safe only while no takeover has sealed our log.
      return this.log.confirmFence().then(() => {
        const still = this.byWorker.get(worker) === held && (held.leaseUntil ?? 0) > Date.now();
        return still ? this.delivery(held) : this.fetch(worker, timeToRecoverMs, waitMs);
      });
    }
    const next = this.nextClaimable(now);
    if (next) return this.claim(next, worker, timeToRecoverMs, now);
    if (waitMs <= 0 || this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        worker,
        ttrMs: timeToRecoverMs,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter(w => w !== waiter);
          resolve(null);
        }, waitMs),
      };
      this.waiters.push(waiter);
      this.scheduleWake();
    });
  }

  /** A held task whose lease ran out: the same worker claims it again, unless it was cancelled meanwhile. */
  private claimOrEnd(t: Task, worker: string, ttrMs: number, now: number, waitMs: number): Promise<Delivery | null> {
    if (t.cancelled) {
      this.endCancelled(t);
      return this.fetch(worker, ttrMs, waitMs, now);
    }
    if (this.exhausted(t)) {
      this.kill(t, "MAX_ATTEMPTS");
      return this.fetch(worker, ttrMs, waitMs, now);
    }
    return this.claim(t, worker, ttrMs, now);
  }

  private exhausted(t: Task): boolean {
    return t.maxAttempts > 0 && t.attempt >= t.maxAttempts;
  }

  /** The oldest task whose lease has run out, else a due delayed task, else the oldest ready task. */
  private nextClaimable(now: number): Task | undefined {
    for (let top = this.leases.peek(); top && top.at <= now; top = this.leases.peek()) {
      this.leases.pop();
      const t = top.item;
      if (this.tasks.get(t.id) !== t || t.state !== "leased" || t.leaseUntil !== top.at) continue;
      if (t.cancelled) this.endCancelled(t);
      else if (this.exhausted(t)) this.kill(t, "MAX_ATTEMPTS");
      else {
        this.hooks.notify("expired", t, { workerId: t.worker });
        return t;
      }
    }
    for (let top = this.delayed.peek(); top && top.at <= now; top = this.delayed.peek()) {
      this.delayed.pop();
      const t = top.item;
      if (this.tasks.get(t.id) !== t || t.state !== "delayed" || t.notBefore !== top.at) continue;
      t.state = "ready";
      t.notBefore = undefined;
      if (this.exhausted(t)) this.kill(t, "MAX_ATTEMPTS");
      else return t;
    }
    while (this.readyHead < this.ready.length) {
      const t = this.ready[this.readyHead++]!;
      if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
        this.ready = this.ready.slice(this.readyHead);
        this.readyHead = 0;
      }
      if (this.tasks.get(t.id) !== t || t.state !== "ready") continue;
      if (this.exhausted(t)) this.kill(t, "MAX_ATTEMPTS");
      else return t;
    }
    return undefined;
  }

  private claim(t: Task, worker: string, timeToRecoverMs: number, now: number): Promise<Delivery> {
    if (t.worker !== undefined && t.worker !== worker && this.byWorker.get(t.worker) === t) {
      this.byWorker.delete(t.worker);
      remember(this.lostBy, t.worker, t.id);
    }
    t.state = "leased";
    t.worker = worker;
    t.attempt += 1;
    t.leaseUntil = now + timeToRecoverMs;
    t.ttrMs = timeToRecoverMs;
    t.leaseStart = now;
    t.notBefore = undefined;
    this.byWorker.set(worker, t);
    this.lostBy.delete(worker);
    this.leases.push(t.leaseUntil, t);
    const committed = this.log
      .append({
        kind: EventKind.Lease,
        taskId: t.id,
        attempt: t.attempt,
        worker,
        leaseUntil: t.leaseUntil,
        ttrMs: timeToRecoverMs,
        leaseStart: now,
        expiresAt: t.expiresAt,
      })
      .then(() => {
        this.hooks.notify("delivered", t, { workerId: worker });
        return this.delivery(t);
      });
    this.inflightLease.set(worker, committed);
    const clear = () => {
      if (this.inflightLease.get(worker) === committed) this.inflightLease.delete(worker);
    };
    committed.then(clear, clear);
    return committed;
  }

  private delivery(t: Task): Delivery {
    return {
      taskId: t.id,
      attempt: t.attempt,
      leaseUntil: t.leaseUntil ?? 0,
      cancelled: t.cancelled,
      value: t.value,
    };
  }

  /** Hands claimable tasks to waiting long polls, oldest waiter first. */
  private dispatch(now = Date.now()): void {
    while (this.waiters.length > 0 && !this.closed) {
      const w = this.waiters[0]!;
      if (this.byWorker.has(w.worker) || this.inflightLease.has(w.worker)) {
        this.waiters.shift();
        clearTimeout(w.timer);
        w.resolve(this.fetch(w.worker, w.ttrMs, 0, now));
        continue;
      }
      const t = this.nextClaimable(now);
      if (!t) break;
      this.waiters.shift();
      clearTimeout(w.timer);
      w.resolve(this.claim(t, w.worker, w.ttrMs, now));
    }
    this.scheduleWake();
  }

  /** While long polls wait, wake up when the next lease expires or delayed task falls due. */
  private scheduleWake(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    if (this.waiters.length === 0 || this.closed) return;
    const next = Math.min(this.leases.peek()?.at ?? Infinity, this.delayed.peek()?.at ?? Infinity);
    if (next === Infinity) return;
    this.wakeTimer = setTimeout(() => this.dispatch(), Math.max(0, next - Date.now()) + 1);
    this.wakeTimer.unref();
  }

  // ---- worker actions on a held task -------------------------------------------------------------

  /** The worker's held task, or why there is none. */
  private async heldBy(worker: string, taskId: string | undefined): Promise<Task | AckOutcome> {
    const inflight = this.inflightLease.get(worker);
    if (inflight) await inflight;
    const t = this.byWorker.get(worker);
    if (t && (taskId === undefined || t.id === taskId)) return t;
    // A retried ack of a task whose ack is still being committed answers once that commit has.
    const pending = this.pendingAcks.get(worker);
    if (taskId !== undefined && pending?.taskId === taskId) {
      await pending.committed;
      return { ok: true, taskId };
    }
    if (taskId !== undefined && this.lastAcked.get(worker) === taskId) return { ok: true, taskId };
    const lost = this.lostBy.get(worker);
    if (lost && (taskId === undefined || taskId === lost)) return { ok: false, reason: "LEASE_LOST", taskId: lost };
    return { ok: false, reason: "NO_TASK" };
  }

  /**
   * Completes the worker's task. For a task with a workflow token, `sealResult` gives the sealed
   * { result, error, meta } that is committed with the ack and handed over afterwards.
   */
  async ack(
    worker: string,
    taskId: string | undefined,
    failed: boolean,
    sealResult: (t: Task) => Promise<Sealed>,
  ): Promise<AckOutcome> {
    this.lastUsed = Date.now();
    const t = await this.heldBy(worker, taskId);
    if (!("seq" in t)) return t;
    let result = t.cancelled ? t.result : undefined;
    if (t.token !== undefined && !t.cancelled) result = await sealResult(t);
    // Every await above (even heldBy's own) lets other calls run: if the task changed hands
    // meanwhile, this ack is for a lost lease. Checked right before the change, synchronously.
    if (this.byWorker.get(worker) !== t) return { ok: false, reason: "LEASE_LOST", taskId: t.id };
    const as: PublicState = t.cancelled ? "cancelled" : "done";
    this.end(t, result, as);
    const committed = this.log.append({
      kind: EventKind.Ack,
      taskId: t.id,
      worker,
      attempt: t.attempt,
      expiresAt: t.expiresAt,
      result,
      reason: failed ? "FAILED" : undefined,
    });
    const pending = { taskId: t.id, committed };
    this.pendingAcks.set(worker, pending);
    try {
      await committed;
    } finally {
      if (this.pendingAcks.get(worker) === pending) this.pendingAcks.delete(worker);
    }
    remember(this.lastAcked, worker, t.id);
    this.countCompletion();
    this.hooks.notify(failed ? "failed" : "completed", t, { workerId: worker });
    if (result) this.hooks.handover(t);
    return { ok: true, taskId: t.id };
  }

  /** Heartbeat: extends the lease by its timeToRecover (up to maxLeaseMs in all), stores progress. */
  async update(
    worker: string,
    taskId: string | undefined,
    sealProgress: ((t: Task) => Promise<Sealed>) | undefined,
  ): Promise<UpdateOutcome> {
    this.lastUsed = Date.now();
    const t = await this.heldBy(worker, taskId);
    if (!("seq" in t)) return t.ok ? { ok: false, reason: "NO_TASK", taskId: t.taskId } : t;
    const progress = sealProgress ? await sealProgress(t) : undefined;
    if (this.byWorker.get(worker) !== t) return { ok: false, reason: "LEASE_LOST", taskId: t.id };
    const now = Date.now();
    const limit = (t.leaseStart ?? now) + this.limits.maxLeaseMs;
    const extended = Math.max(t.leaseUntil ?? now, Math.min(now + (t.ttrMs ?? 0), limit));
    if (extended !== t.leaseUntil) {
      t.leaseUntil = extended;
      this.leases.push(extended, t);
    }
    if (progress) t.progress = progress;
    await this.log.append({
      kind: EventKind.Update,
      taskId: t.id,
      leaseUntil: t.leaseUntil,
      progress,
      expiresAt: t.expiresAt,
    });
    this.hooks.notify("progress", t, { workerId: worker });
    return { ok: true, taskId: t.id, attempt: t.attempt, leaseUntil: t.leaseUntil ?? extended, cancelled: t.cancelled };
  }

  /** Gives the worker's task back for another attempt after `delayMs`; dead after maxAttempts. */
  async release(
    worker: string,
    taskId: string | undefined,
    delayMs: number,
    sealError: ((t: Task) => Promise<Sealed>) | undefined,
  ): Promise<ReleaseOutcome> {
    this.lastUsed = Date.now();
    const t = await this.heldBy(worker, taskId);
    if (!("seq" in t)) return t.ok ? { ok: false, reason: "NO_TASK", taskId: t.taskId } : t;
    const error = sealError ? await sealError(t) : undefined;
    if (this.byWorker.get(worker) !== t) return { ok: false, reason: "LEASE_LOST", taskId: t.id };
    if (error) t.error = error;
    if (t.cancelled) {
      this.endCancelled(t);
      return { ok: true, taskId: t.id, state: "cancelled" };
    }
    if (this.exhausted(t)) {
      await this.kill(t, "MAX_ATTEMPTS");
      return { ok: true, taskId: t.id, state: "dead" };
    }
    const now = Date.now();
    this.byWorker.delete(worker);
    clearLease(t);
    t.state = delayMs > 0 ? "delayed" : "ready";
    t.notBefore = delayMs > 0 ? now + delayMs : undefined;
    this.enqueue(t);
    const committed = this.log.append({
      kind: EventKind.Release,
      taskId: t.id,
      state: stateCode[t.state],
      notBefore: t.notBefore,
      error,
      expiresAt: t.expiresAt,
    });
    this.dispatch(now);
    await committed;
    this.hooks.notify("released", t, { workerId: worker, delayMs });
    return { ok: true, taskId: t.id, state: t.state };
  }

  /** Moves a task to the dead-letter list. Synchronous up to the append, like every change. */
  private kill(t: Task, reason: string): Promise<unknown> {
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    clearLease(t);
    t.state = "dead";
    t.reason = reason;
    const committed = this.log
      .append({ kind: EventKind.Dead, taskId: t.id, reason, error: t.error, expiresAt: t.expiresAt })
      .then(() => this.hooks.notify("dead", t, { reason }));
    // Nobody waits for a kill during fetch; its failure abandons the shard anyway.
    committed.catch(() => undefined);
    return committed;
  }

  /** A cancelled task whose worker let go of it (ack, release, lease expiry) ends now. */
  private endCancelled(t: Task): void {
    const result = t.result;
    this.end(t, result, "cancelled");
    this.log
      .append({ kind: EventKind.Ack, taskId: t.id, attempt: t.attempt, expiresAt: t.expiresAt, result })
      .then(() => (result ? this.hooks.handover(t) : undefined))
      .catch(() => undefined);
  }

  // ---- producer and operator actions -------------------------------------------------------------

  /**
   * Cancels a task. A waiting (or dead) one ends now; a running one is flagged, its worker learns it
   * on its next update or fetch, and it ends when the worker lets go. With a workflow token, the
   * sealed cancellation (`sealCancel`) is handed over when it ends.
   */
  async cancel(
    taskId: string,
    sealCancel: (t: Task) => Promise<Sealed>,
  ): Promise<{ ok: boolean; state: PublicState; taskId: string }> {
    this.lastUsed = Date.now();
    const t = this.tasks.get(taskId);
    if (!t || t.state === "handing-over" || t.cancelled) {
      return { ok: t?.cancelled ?? false, state: this.status(taskId).state, taskId };
    }
    const result = t.token !== undefined ? await sealCancel(t) : undefined;
    // The seal awaited: the task may have ended or changed meanwhile.
    if (this.tasks.get(taskId) !== t || (t.state as string) === "handing-over" || t.cancelled) {
      return { ok: t.cancelled, state: this.status(taskId).state, taskId };
    }
    t.cancelled = true;
    const running = t.state === "leased";
    if (running) t.result = result;
    else this.end(t, result, "cancelled");
    await this.log.append({ kind: EventKind.Cancel, taskId, cancelled: true, result, expiresAt: t.expiresAt });
    this.hooks.notify("cancelled", t, { running });
    if (!running && result) this.hooks.handover(t);
    return { ok: true, state: running ? "leased" : "cancelled", taskId };
  }

  /** Dead tasks, oldest first (sealed errors; the engine opens them for the caller). */
  deadTasks(limit: number): Task[] {
    return [...this.tasks.values()]
      .filter(t => t.state === "dead")
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit);
  }

  /** Puts dead tasks (all, or the given ones) back for delivery with a fresh attempt count. */
  async redrive(taskIds?: string[]): Promise<number> {
    this.lastUsed = Date.now();
    const wanted = taskIds ? new Set(taskIds) : undefined;
    const picked = [...this.tasks.values()].filter(t => t.state === "dead" && (!wanted || wanted.has(t.id)));
    const commits = picked.map(t => {
      t.state = "ready";
      t.attempt = 0;
      t.reason = undefined;
      t.error = undefined;
      this.enqueue(t);
      return this.log.append({ kind: EventKind.Redrive, taskId: t.id, expiresAt: t.expiresAt });
    });
    this.dispatch();
    await Promise.all(commits);
    return picked.length;
  }

  /** Removes every waiting, delayed and dead task (running ones go on, like RabbitMQ's purge). */
  async purge(): Promise<number> {
    this.lastUsed = Date.now();
    const upTo = this.nextSeq - 1;
    const picked = [...this.tasks.values()].filter(
      t => t.seq <= upTo && (t.state === "ready" || t.state === "delayed" || t.state === "dead"),
    );
    for (const t of picked) this.remove(t, "cancelled");
    // The purge marker must outlive every purged task's rows, or they would come back on a takeover.
    await this.log.append({
      kind: EventKind.Purge,
      taskId: "",
      seq: upTo,
      expiresAt: Date.now() + this.limits.retentionMs,
    });
    return picked.length;
  }

  /** Records that the workflow accepted the task's outcome; the task ends. */
  async handed(t: Task): Promise<void> {
    if (this.tasks.get(t.id) !== t) return;
    this.remove(t, t.cancelled ? "cancelled" : "done");
    await this.log.append({ kind: EventKind.Handed, taskId: t.id, expiresAt: t.expiresAt });
  }

  // ---- views -------------------------------------------------------------------------------------

  status(taskId: string, now = Date.now()): TaskStatus {
    const t = this.tasks.get(taskId);
    if (!t) return { taskId, state: this.ended.get(taskId) ?? "unknown" };
    const leaseExpired = t.state === "leased" && (t.leaseUntil ?? 0) <= now;
    const state: PublicState = t.state === "ready" || leaseExpired ? "waiting" : t.state;
    return {
      taskId,
      state,
      attempt: t.attempt,
      maxAttempts: t.maxAttempts,
      worker: t.state === "leased" ? t.worker : undefined,
      leaseUntil: t.state === "leased" ? t.leaseUntil : undefined,
      notBefore: t.notBefore,
      cancelled: t.cancelled,
      reason: t.reason,
      expiresAt: t.expiresAt,
    };
  }

  /** Moves the throughput ring to `now`, zeroing the slots that passed. */
  private advanceSlots(now: number): void {
    const slot = Math.floor(now / THROUGHPUT_SLOT_MS);
    for (let s = this.completionSlot + 1; s <= slot && s <= this.completionSlot + THROUGHPUT_SLOTS; s++) {
      this.completions[s % THROUGHPUT_SLOTS] = 0;
    }
    this.completionSlot = Math.max(this.completionSlot, slot);
  }

  private countCompletion(now = Date.now()): void {
    this.advanceSlots(now);
    this.completions[this.completionSlot % THROUGHPUT_SLOTS]! += 1;
  }

  private completedPer10s(now: number): number[] {
    this.advanceSlots(now);
    return Array.from(
      { length: THROUGHPUT_SLOTS },
      (_, i) => this.completions[(this.completionSlot + 1 + i) % THROUGHPUT_SLOTS]!,
    );
  }

  /** Live tasks, oldest first, optionally of one public state, a page at a time (metadata only). */
  listTasks(
    state: PublicState | undefined,
    offset: number,
    limit: number,
    now = Date.now(),
  ): { total: number; tasks: TaskStatus[] } {
    const all = [...this.tasks.values()]
      .sort((a, b) => a.seq - b.seq)
      .map(t => this.status(t.id, now))
      .filter(s => state === undefined || s.state === state);
    return { total: all.length, tasks: all.slice(offset, offset + limit) };
  }

  /** A live task with its sealed value, progress and last error, for its owner's eyes. */
  inspect(taskId: string): { status: TaskStatus; value?: Sealed; progress?: Sealed; error?: Sealed } {
    const t = this.tasks.get(taskId);
    return { status: this.status(taskId), value: t?.value, progress: t?.progress, error: t?.error };
  }

  stats(now = Date.now()): QueueStats {
    const s: QueueStats = {
      ready: 0,
      delayed: 0,
      inFlight: 0,
      dead: 0,
      handingOver: 0,
      oldestWaitingMs: 0,
      workers: [],
      completedPer10s: this.completedPer10s(now),
    };
    let oldestSeq = Infinity;
    let oldest: Task | undefined;
    for (const t of this.tasks.values()) {
      const leaseExpired = t.state === "leased" && (t.leaseUntil ?? 0) <= now;
      if (t.state === "ready" || leaseExpired || (t.state === "delayed" && (t.notBefore ?? 0) <= now)) {
        s.ready++;
        if (t.seq < oldestSeq) {
          oldestSeq = t.seq;
          oldest = t;
        }
      } else if (t.state === "delayed") s.delayed++;
      else if (t.state === "leased") {
        s.inFlight++;
        s.workers.push({ workerId: t.worker ?? "", taskId: t.id, leaseUntil: t.leaseUntil ?? 0, attempt: t.attempt });
      } else if (t.state === "dead") s.dead++;
      else if (t.state === "handing-over") s.handingOver++;
    }
    if (oldest) s.oldestWaitingMs = Math.max(0, now - (oldest.expiresAt - this.limits.retentionMs));
    return s;
  }

  // ---- housekeeping ------------------------------------------------------------------------------

  /** Copies live tasks into the current partition (a takeover carries all of them). */
  async carry(tasks: Task[]): Promise<void> {
    await Promise.all(
      tasks.map(async t => {
        if (this.tasks.get(t.id) !== t) return;
        const ref = await this.log.append(fullEvent(t, EventKind.Carry));
        this.moveFull(t, ref);
      }),
    );
  }

  /** Forgets tasks whose retention has ended; their rows expire on their own. */
  dropExpired(now = Date.now()): number {
    let n = 0;
    for (const t of [...this.tasks.values()]) {
      if (t.expiresAt <= now) {
        this.remove(t, "unknown");
        n++;
      }
    }
    return n;
  }

  /**
   * After a rollover: retires the oldest partitions that hold no live task's full state (oldest
   * first, so a live task's later events are never orphaned). When more than maxOpenBuckets stay
   * open and the oldest holds only a few live tasks (a long lease, a pending hand-over, a dead
   * task), those are carried forward so it can retire; a dense oldest partition is backlog and stays.
   */
  async maintain(): Promise<void> {
    if (this.maintaining) {
      this.maintainAgain = true;
      return;
    }
    this.maintaining = true;
    try {
      do {
        this.maintainAgain = false;
        const current = bucketKey(this.log.currentBucket);
        const retire = new Set<string>();
        for (const b of this.lease.buckets) {
          const key = bucketKey(b);
          if (key === current || (this.liveFull.get(key) ?? 0) > 0) break;
          retire.add(key);
        }
        if (retire.size > 0) await this.lease.retireBuckets(retire);
        const open = this.lease.buckets;
        const oldest = open[0] && bucketKey(open[0]);
        if (oldest && oldest !== current && open.length > this.limits.maxOpenBuckets) {
          const pinned = [...this.tasks.values()].filter(t => t.fullBucket === oldest);
          if (pinned.length <= this.limits.bucketSize / 4) {
            await this.carry(pinned);
            this.maintainAgain = true;
          }
        }
      } while (this.maintainAgain);
    } finally {
      this.maintaining = false;
    }
  }
}
