/**
 * The owner's in-memory state of one queue, and the only place where tasks are claimed, acked and
 * handed over. Every change is made in memory and appended to the event log in the same
 * synchronous step, so log order equals memory order; a caller is answered only once its event is
 * committed. If any commit fails, the whole shard is abandoned (see docs/ARCHITECTURE.md).
 */
import type { Sealed } from "../codec";
import { DeadlineHeap } from "./deadline-heap";
import type { EventLog } from "./event-log";
import { bucketKey, type OwnerLease } from "./owner-lease";
import type { BucketRef, StoredEvent } from "./store";
import { EventKind, fullEvent, type AckOutcome, type Delivery, type Task } from "./task";

export interface NewTask {
  taskId: string;
  clientId: boolean;
  value: Sealed;
  token?: Sealed;
  expiresAt: number;
}

/** Rebuilds the live tasks from the events of the open partitions, read in log order. */
export function foldEvents(partitions: { ref: BucketRef; events: StoredEvent[] }[], now = Date.now()): Recovered {
  const tasks = new Map<string, Task>();
  const lastAcked = new Map<string, string>();
  let maxSeq = 0;
  for (const { ref, events } of partitions) {
    const key = bucketKey(ref);
    for (const e of events) {
      if (e.seq !== undefined && e.seq > maxSeq) maxSeq = e.seq;
      switch (e.kind) {
        case EventKind.Add:
        case EventKind.Carry: {
          if (!e.value || e.seq === undefined) break;
          tasks.set(e.taskId, {
            id: e.taskId,
            seq: e.seq,
            clientId: e.clientId ?? false,
            value: e.value,
            token: e.token,
            attempt: e.attempt ?? 0,
            state: e.result ? "handing-over" : e.worker ? "leased" : "ready",
            worker: e.result ? undefined : e.worker,
            leaseUntil: e.result ? undefined : e.leaseUntil,
            expiresAt: e.expiresAt,
            result: e.result,
            fullBucket: key,
          });
          break;
        }
        case EventKind.Lease: {
          const t = tasks.get(e.taskId);
          if (!t) break;
          t.state = "leased";
          t.attempt = e.attempt ?? t.attempt;
          t.worker = e.worker;
          t.leaseUntil = e.leaseUntil;
          break;
        }
        case EventKind.Ack: {
          if (e.worker !== undefined) lastAcked.set(e.worker, e.taskId);
          const t = tasks.get(e.taskId);
          if (!t) break;
          if (t.token && e.result) {
            t.state = "handing-over";
            t.result = e.result;
            t.worker = undefined;
            t.leaseUntil = undefined;
          } else {
            tasks.delete(e.taskId);
          }
          break;
        }
        case EventKind.Handed:
          tasks.delete(e.taskId);
          break;
      }
    }
  }
  for (const [id, t] of tasks) if (t.expiresAt <= now) tasks.delete(id);
  return { tasks, maxSeq, lastAcked };
}

/** What a takeover learns from the log. */
export interface Recovered {
  tasks: Map<string, Task>;
  maxSeq: number;
  /** The last task each worker acked, so that a retried ack with that task id answers true. */
  lastAcked: Map<string, string>;
}

const REMEMBERED_WORKERS = 10_000;

function remember(map: Map<string, string>, key: string, value: string): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > REMEMBERED_WORKERS) map.delete(map.keys().next().value as string);
}

export class QueueShard {
  private readonly tasks = new Map<string, Task>();
  private ready: Task[] = [];
  private readyHead = 0;
  private readonly leases = new DeadlineHeap<Task>();
  private readonly byWorker = new Map<string, Task>();
  private readonly inflightLease = new Map<string, Promise<Delivery>>();
  /** Workers whose task went to another worker, so that their ack can say LEASE_LOST. */
  private readonly lostBy = new Map<string, string>();
  private readonly lastAcked: Map<string, string>;
  private readonly liveFull = new Map<string, number>();
  private readonly handoverWaiting = new Set<Task>();
  /** Adds not yet committed, so that a duplicate add waits for the original's commit. */
  private readonly addCommits = new Map<string, Promise<void>>();
  private nextSeq: number;
  private maintaining = false;
  private maintainAgain = false;
  lastUsed = Date.now();

  constructor(
    readonly queue: string,
    private readonly log: EventLog,
    private readonly lease: OwnerLease,
    private readonly maxOpenBuckets: number,
    private readonly bucketSize: number,
    recovered: Recovered,
    private readonly onHandover: (task: Task) => void,
  ) {
    this.nextSeq = recovered.maxSeq + 1;
    this.lastAcked = recovered.lastAcked;
    const sorted = [...recovered.tasks.values()].sort((a, b) => a.seq - b.seq);
    for (const t of sorted) this.track(t);
  }

  private track(t: Task): void {
    this.tasks.set(t.id, t);
    this.liveFull.set(t.fullBucket, (this.liveFull.get(t.fullBucket) ?? 0) + 1);
    if (t.state === "ready") this.ready.push(t);
    else if (t.state === "leased" && t.worker !== undefined && t.leaseUntil !== undefined) {
      this.byWorker.set(t.worker, t);
      this.leases.push(t.leaseUntil, t);
    } else if (t.state === "handing-over") this.handoverWaiting.add(t);
  }

  private remove(t: Task): void {
    if (this.tasks.get(t.id) !== t) return;
    this.tasks.delete(t.id);
    const n = (this.liveFull.get(t.fullBucket) ?? 1) - 1;
    if (n > 0) this.liveFull.set(t.fullBucket, n);
    else this.liveFull.delete(t.fullBucket);
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    this.handoverWaiting.delete(t);
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

  /** Appends a new task. Resolves once its add event is committed. */
  async add(input: NewTask): Promise<void> {
    this.lastUsed = Date.now();
    if (this.tasks.has(input.taskId)) return this.addCommits.get(input.taskId);
    const t: Task = {
      id: input.taskId,
      seq: this.nextSeq++,
      clientId: input.clientId,
      value: input.value,
      token: input.token,
      attempt: 0,
      state: "ready",
      expiresAt: input.expiresAt,
      fullBucket: bucketKey(this.log.currentBucket),
    };
    this.tasks.set(t.id, t);
    this.ready.push(t);
    const committed = this.log.append(fullEvent(t, EventKind.Add));
    // Counted in the partition it really went into, once known.
    this.liveFull.set(t.fullBucket, (this.liveFull.get(t.fullBucket) ?? 0) + 1);
    const done = committed.then(ref => this.moveFull(t, ref));
    this.addCommits.set(t.id, done);
    const clear = () => this.addCommits.delete(t.id);
    done.then(clear, clear);
    return done;
  }

  /** The worker's task: the one it holds while its lease is valid, else the next claimable one. */
  fetch(worker: string, timeToRecoverMs: number, now = Date.now()): Promise<Delivery | null> {
    this.lastUsed = now;
    const inflight = this.inflightLease.get(worker);
    if (inflight) return inflight;
    const held = this.byWorker.get(worker);
    if (held) {
      if ((held.leaseUntil ?? 0) <= now) return this.claim(held, worker, timeToRecoverMs, now);
      // Answering from memory is safe only while no takeover has sealed our log.
      return this.log.confirmFence().then(() => {
        const still = this.byWorker.get(worker) === held && (held.leaseUntil ?? 0) > Date.now();
        return still ? this.delivery(held) : this.fetch(worker, timeToRecoverMs);
      });
    }
    const next = this.nextClaimable(now);
    if (!next) return Promise.resolve(null);
    return this.claim(next, worker, timeToRecoverMs, now);
  }

  /** The oldest task whose lease has run out, else the oldest ready task. */
  private nextClaimable(now: number): Task | undefined {
    for (let top = this.leases.peek(); top && top.at <= now; top = this.leases.peek()) {
      this.leases.pop();
      const t = top.item;
      if (this.tasks.get(t.id) === t && t.state === "leased" && t.leaseUntil === top.at) return t;
    }
    while (this.readyHead < this.ready.length) {
      const t = this.ready[this.readyHead++]!;
      if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
        this.ready = this.ready.slice(this.readyHead);
        this.readyHead = 0;
      }
      if (this.tasks.get(t.id) === t && t.state === "ready") return t;
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
        expiresAt: t.expiresAt,
      })
      .then(() => this.delivery(t));
    this.inflightLease.set(worker, committed);
    const clear = () => {
      if (this.inflightLease.get(worker) === committed) this.inflightLease.delete(worker);
    };
    committed.then(clear, clear);
    return committed;
  }

  private delivery(t: Task): Delivery {
    return { taskId: t.id, attempt: t.attempt, leaseUntil: t.leaseUntil ?? 0, value: t.value };
  }

  /**
   * Completes the worker's task. For a task with a workflow token, `sealResult` gives the sealed
   * { result, error, meta } that is committed with the ack and handed over afterwards.
   */
  async ack(worker: string, taskId: string | undefined, sealResult: (t: Task) => Promise<Sealed>): Promise<AckOutcome> {
    this.lastUsed = Date.now();
    const inflight = this.inflightLease.get(worker);
    if (inflight) await inflight;
    const t = this.byWorker.get(worker);
    if (!t || (taskId !== undefined && t.id !== taskId)) {
      if (taskId !== undefined && this.lastAcked.get(worker) === taskId) return { ok: true, taskId };
      const lost = this.lostBy.get(worker);
      if (lost && (taskId === undefined || taskId === lost)) return { ok: false, reason: "LEASE_LOST", taskId: lost };
      return { ok: false, reason: "NO_TASK" };
    }
    let result: Sealed | undefined;
    if (t.token !== undefined) {
      // Sealing is async; if the task changed hands meanwhile, this ack is for a lost lease.
      result = await sealResult(t);
      if (this.byWorker.get(worker) !== t) {
        return { ok: false, reason: "LEASE_LOST", taskId: this.lostBy.get(worker) };
      }
    }
    this.byWorker.delete(worker);
    const handOver = result !== undefined;
    if (handOver) {
      t.state = "handing-over";
      t.result = result;
      t.worker = undefined;
      t.leaseUntil = undefined;
    } else {
      this.remove(t);
    }
    remember(this.lastAcked, worker, t.id);
    await this.log.append({
      kind: EventKind.Ack,
      taskId: t.id,
      worker,
      attempt: t.attempt,
      expiresAt: t.expiresAt,
      result: handOver ? result : undefined,
    });
    if (handOver) this.onHandover(t);
    return { ok: true, taskId: t.id };
  }

  /** Records that the workflow accepted the task's result; the task ends. */
  async handed(t: Task): Promise<void> {
    if (this.tasks.get(t.id) !== t) return;
    this.remove(t);
    await this.log.append({ kind: EventKind.Handed, taskId: t.id, expiresAt: t.expiresAt });
  }

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
        this.remove(t);
        n++;
      }
    }
    return n;
  }

  /**
   * After a rollover: retires the oldest partitions that hold no live task's full state (oldest
   * first, so a live task's later events are never orphaned). When more than maxOpenBuckets stay
   * open and the oldest holds only a few live tasks (a long lease, a pending hand-over), those are
   * carried forward so it can retire; a dense oldest partition is backlog and stays.
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
        if (oldest && oldest !== current && open.length > this.maxOpenBuckets) {
          const pinned = [...this.tasks.values()].filter(t => t.fullBucket === oldest);
          if (pinned.length <= this.bucketSize / 4) {
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
