/**
 * The owner's state of one queue, and the only place where tasks are claimed, acked, released,
 * cancelled, redriven, purged and handed over. Every change is made in memory and appended to the
 * log in the same synchronous step, so log order equals memory order; a caller is answered only
 * once its event is committed. The state talks to the log, the backlog, the parked tables and the
 * derived rows through narrow interfaces, so it is unit-tested without Cassandra
 * (test/queue-state.test.ts). If any commit fails, the owner abandons the whole queue.
 */
import { RecentMap } from "./recent-map";
import type { Sealed } from "../codec";
import type { Backlog } from "./backlog";
import type { Snapshot } from "./checkpoint";
import { DeadlineHeap } from "./deadline-heap";
import type { LogWriter } from "./event-log";
import type { Parked } from "./parked";
import { overlayIndex, type PendingIndex } from "./derived-writer";
import type { DerivedWrite, Recovered } from "./recovery";
import { statusOf } from "./queue-views";
import type { IndexEntry } from "./store";
import {
  EventFlag,
  EventKind,
  flagsOf,
  stateCode,
  type AckOutcome,
  type CancelOutcome,
  type Delivery,
  type LogEvent,
  type ParkedTask,
  type PublicState,
  type ReleaseOutcome,
  type Task,
  type TaskBody,
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
  /** Look the id up in task_index first: a caller's id, or a retry whose first attempt may have committed. */
  checkIndex?: boolean;
}

export interface StateHooks {
  /** A task with a workflow token has ended: its outcome must be handed over. */
  handover(task: Task): void;
  /** The number of tasks waiting to be handed over went from 0 to more, or back to 0. */
  handoversPending(pending: boolean): void;
  /** After a commit: something happened to a task (metadata only). */
  notify(type: TaskEventType, task: Task, extra?: Record<string, unknown>): void;
}

export interface StateLimits {
  /** Longest total lease a worker can reach by updates. */
  maxLeaseMs: number;
  retentionMs: number;
  /** A workflow outcome is kept at least this long, even when its task's retention ends sooner. */
  handoverRetentionMs: number;
}

/** What the state needs besides its log and its two stores of waiting tasks. */
export interface StateDeps {
  log: LogWriter;
  backlog: Backlog;
  parked: Parked;
  derived: {
    enqueue(w: DerivedWrite): void;
    /** Resolves when the derived writes waiting are few enough to take more. */
    room(): Promise<void>;
    pendingOf(taskId: string): PendingIndex | undefined;
    hasPendingEntry(taskId: string): boolean;
  };
  /** task_index, read when a task is not in memory. */
  readIndex(taskId: string): Promise<IndexEntry | null>;
  /** A source event by position (a backlog task's metadata for a cancel). */
  readSource(at: number): Promise<LogEvent | null>;
  /** A parked row by its key. */
  readParked(table: "due" | "dead", slot: number, part: number, dueAt: number, pos: number): Promise<ParkedTask | null>;
  /** A task's body by its source position. */
  loadBody(src: number): Promise<TaskBody>;
  hooks: StateHooks;
  limits: StateLimits;
}

const REMEMBERED = 10_000;
/** Workers whose last ack a checkpoint keeps (for retried acks after a takeover). */
const REMEMBERED_ACKS = 2048;
const THROUGHPUT_SLOT_MS = 10_000;
const THROUGHPUT_SLOTS = 30;

function clearLease(t: Task): void {
  t.worker = undefined;
  t.leaseUntil = undefined;
  t.ttrMs = undefined;
  t.leaseStart = undefined;
}

interface Waiter {
  worker: string;
  ttrMs: number;
  resolve: (d: Promise<Delivery | null> | Delivery | null) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QueueState {
  /** Leased, returned (ready again) and handing-over tasks, in the order they last entered. */
  private readonly inflight = new Map<string, Task>();
  /** Returned tasks in delivery order (entries that are no longer "ready" are skipped). */
  private returned: Task[] = [];
  private readonly leases = new DeadlineHeap<Task>();
  private readonly byWorker = new Map<string, Task>();
  private readonly inflightLease = new Map<string, Promise<Delivery>>();
  /** Workers whose task went to another worker, so that their ack can say LEASE_LOST. */
  private readonly lostBy = new RecentMap<string>(REMEMBERED);
  private readonly lastAcked: RecentMap<string>;
  /** Acks appended but not yet committed, by worker. */
  private readonly pendingAcks = new Map<string, { taskId: string; committed: Promise<unknown> }>();
  private readonly ended: RecentMap<PublicState>;
  private readonly handoverWaiting = new Set<Task>();
  private handoversReported = false;
  /** Adds not yet committed, so that a duplicate add waits for the original's commit. */
  private readonly addCommits = new Map<string, Promise<void>>();
  private waiters: Waiter[] = [];
  private wakeTimer: NodeJS.Timeout | undefined;
  private nextSeq: number;
  private closed = false;
  private redriving: Promise<unknown> = Promise.resolve();
  /** Completions per 10 s slot, a ring of 30 slots (5 minutes), for the throughput chart. */
  private completions: number[];
  private completionSlot: number;
  lastUsed = Date.now();

  constructor(
    private readonly deps: StateDeps,
    recovered: Pick<Recovered, "nextSeq" | "inflight" | "lastAcked" | "ended" | "completions">,
  ) {
    this.nextSeq = recovered.nextSeq;
    this.lastAcked = new RecentMap(REMEMBERED_ACKS, recovered.lastAcked);
    this.ended = new RecentMap(REMEMBERED, recovered.ended);
    const ring = recovered.completions.counts;
    this.completions = ring.length === THROUGHPUT_SLOTS ? [...ring] : new Array<number>(THROUGHPUT_SLOTS).fill(0);
    this.completionSlot = recovered.completions.slot || Math.floor(Date.now() / THROUGHPUT_SLOT_MS);
    for (const t of recovered.inflight.values()) this.track(t);
  }

  private get log(): LogWriter {
    return this.deps.log;
  }

  private get backlog(): Backlog {
    return this.deps.backlog;
  }

  private get parked(): Parked {
    return this.deps.parked;
  }

  private track(t: Task): void {
    this.inflight.set(t.id, t);
    if (t.state === "leased" && t.worker !== undefined && t.leaseUntil !== undefined) {
      // One task per worker: if two claim the same worker, the later lease is the one it holds.
      const other = this.byWorker.get(t.worker);
      if (!other || (other.leaseStart ?? 0) <= (t.leaseStart ?? 0)) this.byWorker.set(t.worker, t);
      this.leases.push(t.leaseUntil, t);
    } else if (t.state === "handing-over") this.waitForHandover(t);
    else if (t.state === "ready") this.returned.push(t);
  }

  /** Appends an event; its derived rows are written once it is committed. */
  private append(event: LogEvent, derived?: (at: number) => DerivedWrite[]): { at: number; committed: Promise<void> } {
    const appended = this.log.append(event);
    if (!derived) return appended;
    const writes = derived(appended.at);
    const committed =
      writes.length === 0
        ? appended.committed
        : appended.committed.then(() => {
            for (const w of writes) this.deps.derived.enqueue(w);
          });
    return { at: appended.at, committed };
  }

  /** Called for every committed batch (in log order): new ready sources may join the window. */
  committed(events: import("./event-log").CommittedEvent[]): void {
    this.backlog.committed(events);
    if (this.waiters.length > 0) this.dispatch();
  }

  private remove(t: Task, as: PublicState): void {
    if (this.inflight.get(t.id) !== t) return;
    this.inflight.delete(t.id);
    this.leases.delete(t);
    // A task parked as delayed or dead has not ended: its status comes from its row.
    if (as !== "delayed" && as !== "dead") this.ended.set(t.id, as);
    else this.ended.delete(t.id);
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    this.handoverDone(t);
    t.body = undefined;
  }

  /** The task holds no lease any more: its deadline leaves the heap (nothing keeps an ended task alive). */
  private dropLease(t: Task): void {
    clearLease(t);
    this.leases.delete(t);
  }

  /** Lease deadlines kept: one per leased task. */
  get leaseDeadlines(): number {
    return this.leases.size;
  }

  /** Ends a task: handing over its sealed outcome when it has one, else forgetting it. */
  private end(t: Task, result: Sealed | undefined, resultPos: number | undefined, as: PublicState): void {
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    if (result || resultPos !== undefined) {
      t.state = "handing-over";
      t.result = result;
      t.resultPos = resultPos;
      this.dropLease(t);
      this.waitForHandover(t);
    } else {
      this.remove(t, as);
    }
  }

  private waitForHandover(t: Task): void {
    this.handoverWaiting.add(t);
    this.reportHandovers();
  }

  private handoverDone(t: Task): void {
    if (this.handoverWaiting.delete(t)) this.reportHandovers();
  }

  private reportHandovers(): void {
    const pending = this.handoverWaiting.size > 0;
    if (pending === this.handoversReported) return;
    this.handoversReported = pending;
    this.hooks.handoversPending(pending);
  }

  /** Tasks waiting to be handed over (recovered or not yet accepted). */
  pendingHandovers(): Task[] {
    return [...this.handoverWaiting];
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

  /** Appends a new task (once per caller-chosen id within retention). Resolves once its add is committed. */
  async add(input: NewTask, now = Date.now()): Promise<void> {
    this.lastUsed = now;
    const known = this.knownAdd(input.taskId);
    if (known) return known;
    // Each add writes a task_index row after its commit: wait while too many are pending.
    await this.deps.derived.room();
    if ((input.clientId || input.checkIndex) && (await this.deps.readIndex(input.taskId)) !== null) return;
    // The read awaited: a concurrent add of the same id may have gone first.
    const again = this.knownAdd(input.taskId);
    if (again) return again;
    return this.appendAdd(input, Date.now());
  }

  private knownAdd(taskId: string): Promise<void> | undefined {
    const pending = this.addCommits.get(taskId);
    if (pending) return pending;
    if (this.inflight.has(taskId) || this.deps.derived.hasPendingEntry(taskId)) return Promise.resolve();
    return undefined;
  }

  private appendAdd(input: NewTask, now: number): Promise<void> {
    const delayed = input.notBefore !== undefined && input.notBefore > this.parked.dueFloor(now);
    const seq = this.nextSeq++;
    const event: LogEvent = {
      kind: EventKind.Add,
      taskId: input.taskId,
      seq,
      clientId: input.clientId,
      value: input.value,
      token: input.token,
      attempt: 0,
      maxAttempts: input.maxAttempts,
      state: stateCode[delayed ? "delayed" : "ready"],
      notBefore: delayed ? input.notBefore : undefined,
      expiresAt: input.expiresAt,
    };
    let slot: { minute: number; part: number } | undefined;
    if (delayed) {
      slot = this.parked.parkDue(input.notBefore!);
      event.refPart = slot.part;
    } else this.backlog.sourceAppended();
    const { committed } = this.append(event, at => {
      const writes: DerivedWrite[] = [
        { kind: "index", taskId: input.taskId, seq, pos: at, clientId: input.clientId, expiresAt: input.expiresAt },
      ];
      if (slot) {
        writes.push(
          {
            kind: "due",
            row: {
              slot: slot.minute,
              part: slot.part,
              dueAt: input.notBefore!,
              pos: at,
              taskId: input.taskId,
              seq,
              clientId: input.clientId,
              src: at,
              body: { value: input.value, token: input.token },
              attempt: 0,
              maxAttempts: input.maxAttempts,
              expiresAt: input.expiresAt,
            },
          },
          {
            kind: "hint",
            taskId: input.taskId,
            hint: { kind: "delayed", minute: slot.minute, part: slot.part, dueAt: input.notBefore!, pos: at },
            at,
            expiresAt: input.expiresAt,
          },
        );
      }
      return writes;
    });
    const done = committed.then(() => {
      this.hooks.notify("added", {
        id: input.taskId,
        seq,
        clientId: input.clientId,
        src: 0,
        hasToken: input.token !== undefined,
        attempt: 0,
        maxAttempts: input.maxAttempts,
        state: delayed ? "delayed" : "ready",
        expiresAt: input.expiresAt,
        cancelled: false,
      });
    });
    this.addCommits.set(input.taskId, done);
    const clear = () => this.addCommits.delete(input.taskId);
    done.then(clear, clear);
    return done;
  }

  private get hooks(): StateHooks {
    return this.deps.hooks;
  }

  // ---- fetch -------------------------------------------------------------------------------------

  /**
   * The worker's task: the one it holds while its lease is valid, else the next claimable one,
   * else (with waitMs) the first one that becomes claimable within waitMs, else null.
   */
  async fetch(worker: string, timeToRecoverMs: number, waitMs = 0, now = Date.now()): Promise<Delivery | null> {
    this.lastUsed = now;
    // A claim for this worker is being committed: once it is, answer as a re-fetch (lease still
    // valid, fence confirmed), never with a delivery that may have gone stale meanwhile.
    const inflight = this.inflightLease.get(worker);
    if (inflight) {
      await inflight.catch(() => undefined);
      return this.fetch(worker, timeToRecoverMs, waitMs);
    }
    const held = this.byWorker.get(worker);
    if (held) {
      if ((held.leaseUntil ?? 0) <= now) return this.claimOrEnd(held, worker, timeToRecoverMs, now, waitMs);
      // Answering from memory is safe only while no takeover has sealed our log.
      await this.log.confirmFence();
      const body = await this.bodyOf(held);
      const still = this.byWorker.get(worker) === held && (held.leaseUntil ?? 0) > Date.now();
      return still ? this.delivery(held, body) : this.fetch(worker, timeToRecoverMs, waitMs);
    }
    let next = this.claimNext(worker, timeToRecoverMs, now);
    // The window ran dry but the backlog has more: read the next page, then look again. Other
    // fetches waiting for the same page may take all of it first; then wait for the next one, so
    // that "nothing" always means nothing ready, never "not read yet".
    while (!next && this.backlog.count > this.backlog.windowSize) {
      this.backlog.demand(Date.now());
      const read = await this.backlog.ensure();
      if (this.closed) return null;
      if (this.inflightLease.has(worker) || this.byWorker.has(worker))
        return this.fetch(worker, timeToRecoverMs, waitMs);
      next = this.claimNext(worker, timeToRecoverMs, Date.now());
      // Nothing more could be read now: nothing is ready for this worker.
      if (!read) break;
    }
    if (next) return next;
    if (waitMs <= 0 || this.closed) return null;
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

  private async bodyOf(t: Task): Promise<TaskBody> {
    if (t.body) return t.body;
    const body = await this.deps.loadBody(t.src);
    // Only an in-flight task keeps its body; one that ended meanwhile does not need it.
    if (this.inflight.get(t.id) === t && t.src !== undefined) t.body = body;
    return body;
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

  private exhausted(t: { attempt: number; maxAttempts: number }): boolean {
    return t.maxAttempts > 0 && t.attempt >= t.maxAttempts;
  }

  /**
   * Claims the next task for the worker, synchronously: the oldest task whose lease has run out,
   * else a returned one, else a due delayed task, else the head of the backlog.
   */
  private claimNext(worker: string, ttrMs: number, now: number): Promise<Delivery> | undefined {
    for (let top = this.leases.peek(); top && top.at <= now; top = this.leases.peek()) {
      this.leases.pop();
      const t = top.item;
      if (this.inflight.get(t.id) !== t || t.state !== "leased" || t.leaseUntil !== top.at) continue;
      if (t.cancelled) this.endCancelled(t);
      else if (this.exhausted(t)) this.kill(t, "MAX_ATTEMPTS");
      else {
        this.hooks.notify("expired", t, { workerId: t.worker });
        return this.claim(t, worker, ttrMs, now);
      }
    }
    while (this.returned.length > 0) {
      const t = this.returned.shift()!;
      if (this.inflight.get(t.id) !== t || t.state !== "ready") continue;
      if (t.expiresAt <= now) {
        this.remove(t, "unknown");
        continue;
      }
      if (this.exhausted(t)) this.kill(t, "MAX_ATTEMPTS");
      else return this.claim(t, worker, ttrMs, now);
    }
    const due = this.parked.takeDue(now);
    if (due) return this.claimDue(due, worker, ttrMs, now);
    const head = this.backlog.peek(now);
    if (head) {
      this.backlog.take();
      this.inflight.set(head.id, head);
      return this.claim(head, worker, ttrMs, now, true);
    }
    return undefined;
  }

  private claim(t: Task, worker: string, timeToRecoverMs: number, now: number, fromBacklog = false): Promise<Delivery> {
    if (t.worker !== undefined && t.worker !== worker && this.byWorker.get(t.worker) === t) {
      this.byWorker.delete(t.worker);
      this.lostBy.set(t.worker, t.id);
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
    const { committed } = this.append({
      kind: EventKind.Lease,
      taskId: t.id,
      seq: t.seq,
      src: t.src,
      attempt: t.attempt,
      maxAttempts: t.maxAttempts,
      worker,
      leaseUntil: t.leaseUntil,
      ttrMs: timeToRecoverMs,
      leaseStart: now,
      expiresAt: t.expiresAt,
      flags: flagsOf(t) | (fromBacklog ? EventFlag.FromBacklog : 0),
    });
    return this.trackClaim(t, worker, committed);
  }

  /** A delayed task that is due: delivered with a carry (its new source, with the lease). */
  private claimDue(p: ParkedTask, worker: string, timeToRecoverMs: number, now: number): Promise<Delivery> {
    const t: Task = {
      id: p.taskId,
      seq: p.seq,
      clientId: p.clientId,
      src: 0,
      body: p.body,
      hasToken: p.body.token !== undefined,
      attempt: p.attempt + 1,
      maxAttempts: p.maxAttempts,
      state: "leased",
      worker,
      leaseUntil: now + timeToRecoverMs,
      ttrMs: timeToRecoverMs,
      leaseStart: now,
      expiresAt: p.expiresAt,
      progress: p.progress,
      error: p.error,
      cancelled: false,
    };
    const { at, committed } = this.append(
      {
        kind: EventKind.Carry,
        taskId: t.id,
        seq: t.seq,
        clientId: t.clientId,
        value: p.body.value,
        token: p.body.token,
        attempt: t.attempt,
        maxAttempts: t.maxAttempts,
        state: stateCode.leased,
        worker,
        leaseUntil: t.leaseUntil,
        ttrMs: timeToRecoverMs,
        leaseStart: now,
        expiresAt: t.expiresAt,
        progress: p.progress,
        error: p.error,
        ref: p.pos,
        refPart: p.part,
        refTime: p.dueAt,
      },
      at => [
        {
          kind: "index",
          taskId: t.id,
          seq: t.seq,
          pos: at,
          clientId: t.clientId,
          expiresAt: t.expiresAt,
          delivered: true,
        },
      ],
    );
    t.src = at;
    if (p.progress) t.progressPos = at;
    if (p.error) t.errorPos = at;
    this.inflight.set(t.id, t);
    this.byWorker.set(worker, t);
    this.lostBy.delete(worker);
    this.leases.push(t.leaseUntil!, t);
    return this.trackClaim(t, worker, committed);
  }

  private trackClaim(t: Task, worker: string, committed: Promise<void>): Promise<Delivery> {
    const attempt = t.attempt;
    const delivered = committed.then(async () => {
      this.hooks.notify("delivered", t, { workerId: worker });
      const body = await this.bodyOf(t);
      return { ...this.delivery(t, body), attempt };
    });
    this.inflightLease.set(worker, delivered);
    const clear = () => {
      if (this.inflightLease.get(worker) === delivered) this.inflightLease.delete(worker);
    };
    delivered.then(clear, clear);
    return delivered;
  }

  private delivery(t: Task, body: TaskBody): Delivery {
    return {
      taskId: t.id,
      attempt: t.attempt,
      leaseUntil: t.leaseUntil ?? 0,
      cancelled: t.cancelled,
      value: body.value,
    };
  }

  /** Hands claimable tasks to waiting long polls, oldest waiter first. */
  dispatch(now = Date.now()): void {
    while (this.waiters.length > 0 && !this.closed) {
      const w = this.waiters[0]!;
      if (this.byWorker.has(w.worker) || this.inflightLease.has(w.worker)) {
        this.waiters.shift();
        clearTimeout(w.timer);
        w.resolve(this.fetch(w.worker, w.ttrMs, 0, now));
        continue;
      }
      const d = this.claimNext(w.worker, w.ttrMs, now);
      if (!d) {
        if (this.backlog.count > this.backlog.windowSize) this.backlog.demand(now);
        break;
      }
      this.waiters.shift();
      clearTimeout(w.timer);
      w.resolve(d);
    }
    this.scheduleWake();
  }

  /** While long polls wait, wake up when the next lease expires or delayed task falls due. */
  private scheduleWake(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    if (this.waiters.length === 0 || this.closed) return;
    const next = Math.min(this.leases.peek()?.at ?? Infinity, this.parked.nextDueAt() ?? Infinity);
    if (next === Infinity) return;
    this.wakeTimer = setTimeout(
      () => {
        this.parked.refill();
        this.dispatch();
      },
      Math.max(0, next - Date.now()) + 1,
    );
    this.wakeTimer.unref();
  }

  // ---- worker actions on a held task -------------------------------------------------------------

  /** The worker's held task, or why there is none. */
  private async heldBy(worker: string, taskId: string | undefined): Promise<Task | AckOutcome> {
    const inflight = this.inflightLease.get(worker);
    if (inflight) await inflight.catch(() => undefined);
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
    appended?: () => void,
  ): Promise<AckOutcome> {
    this.lastUsed = Date.now();
    const t = await this.heldBy(worker, taskId);
    if (!("seq" in t)) return t;
    // A cancelled task's outcome is its cancellation, sealed at the cancel (in memory, or in the cancel event).
    const result = t.hasToken && !t.cancelled ? await sealResult(t) : undefined;
    // The outcome travels with a copy of the token, so the hand-over never depends on the source.
    const token = result ? (await this.bodyOf(t)).token : undefined;
    // Every await above (even heldBy's own) lets other calls run: if the task changed hands
    // meanwhile, this ack is for a lost lease. Checked right before the change, synchronously.
    if (this.byWorker.get(worker) !== t) return { ok: false, reason: "LEASE_LOST", taskId: t.id };
    const as: PublicState = t.cancelled ? "cancelled" : "done";
    const { at, committed } = this.append({
      kind: EventKind.Ack,
      taskId: t.id,
      worker,
      attempt: t.attempt,
      expiresAt: result ? this.handoverExpiry(t) : t.expiresAt,
      result,
      token,
      reason: failed ? "FAILED" : undefined,
    });
    if (t.cancelled) this.end(t, t.result, t.resultPos, as);
    else this.end(t, result, result ? at : undefined, as);
    const pending = { taskId: t.id, committed };
    this.pendingAcks.set(worker, pending);
    appended?.();
    try {
      await committed;
    } finally {
      if (this.pendingAcks.get(worker) === pending) this.pendingAcks.delete(worker);
    }
    this.lastAcked.set(worker, t.id);
    this.countCompletion();
    this.hooks.notify(failed ? "failed" : "completed", t, { workerId: worker });
    if (t.state === "handing-over") this.hooks.handover(t);
    return { ok: true, taskId: t.id };
  }

  /**
   * An ack, then a fetch for the same worker started in the same turn as the ack's event was
   * appended: the lease event follows the ack event in the log, usually in the same batch, so one
   * commit answers both. The next task is answered only once its lease is committed, and so the
   * ack before it (commits follow log order). A refused ack (NO_TASK, LEASE_LOST) still fetches:
   * the worker holds nothing either way. `taskId` is required: a retry without it would ack the
   * task the first attempt took next.
   */
  async ackThenFetch(
    worker: string,
    taskId: string | undefined,
    failed: boolean,
    sealResult: (t: Task) => Promise<Sealed>,
    timeToRecoverMs: number,
  ): Promise<AckOutcome & { next?: Delivery | null }> {
    // Without the id, a retry (of a caller, or of a forward) would ack the task the first attempt took.
    if (taskId === undefined) throw new Error("ackThenFetch needs the id of the task it acks");
    let next: Promise<Delivery | null> | undefined;
    const outcome = await this.ack(worker, taskId, failed, sealResult, () => {
      next = this.fetch(worker, timeToRecoverMs);
      // Awaited below; if the ack's commit fails first, this one fails the same way, unobserved.
      next.catch(() => undefined);
    });
    try {
      return { ...outcome, next: await (next ?? this.fetch(worker, timeToRecoverMs)) };
    } catch {
      // The ack stands; the worker's own fetch will meet (and report) whatever failed here.
      return outcome;
    }
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
    const limit = (t.leaseStart ?? now) + this.deps.limits.maxLeaseMs;
    const extended = Math.max(t.leaseUntil ?? now, Math.min(now + (t.ttrMs ?? 0), limit));
    if (extended !== t.leaseUntil) {
      t.leaseUntil = extended;
      this.leases.push(extended, t);
    }
    const { at, committed } = this.append({
      kind: EventKind.Update,
      taskId: t.id,
      leaseUntil: t.leaseUntil,
      progress,
      expiresAt: t.expiresAt,
    });
    if (progress) {
      t.progress = progress;
      t.progressPos = at;
    }
    await committed;
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
    if (error) {
      t.error = error;
      t.errorPos = undefined;
    }
    if (t.cancelled) {
      await this.endCancelled(t);
      return { ok: true, taskId: t.id, state: "cancelled" };
    }
    if (this.exhausted(t)) {
      await this.kill(t, "MAX_ATTEMPTS");
      return { ok: true, taskId: t.id, state: "dead" };
    }
    const now = Date.now();
    this.byWorker.delete(worker);
    this.dropLease(t);
    const notBefore = delayMs > 0 ? now + delayMs : undefined;
    const delayed = notBefore !== undefined && notBefore > this.parked.dueFloor(now);
    const event: LogEvent = {
      kind: EventKind.Release,
      taskId: t.id,
      state: stateCode[delayed ? "delayed" : "ready"],
      notBefore: delayed ? notBefore : undefined,
      error,
      expiresAt: t.expiresAt,
    };
    let committed: Promise<void>;
    if (delayed) {
      const slot = this.parked.parkDue(notBefore);
      event.refPart = slot.part;
      const body = t.body;
      const snapshot = { ...t };
      committed = this.append(event, at => [
        {
          kind: "due",
          row: {
            slot: slot.minute,
            part: slot.part,
            dueAt: notBefore,
            pos: at,
            taskId: snapshot.id,
            seq: snapshot.seq,
            clientId: snapshot.clientId,
            src: snapshot.src,
            body,
            attempt: snapshot.attempt,
            maxAttempts: snapshot.maxAttempts,
            expiresAt: snapshot.expiresAt,
            error: snapshot.error,
            errorPos: snapshot.error ? undefined : snapshot.errorPos,
            reason: snapshot.reason,
          },
        },
        {
          kind: "hint",
          taskId: snapshot.id,
          hint: { kind: "delayed", minute: slot.minute, part: slot.part, dueAt: notBefore, pos: at },
          at,
          expiresAt: snapshot.expiresAt,
        },
      ]).committed;
      t.state = "delayed";
      this.remove(t, "delayed");
    } else {
      const appended = this.append(event);
      if (error) t.errorPos = appended.at;
      committed = appended.committed;
      t.state = "ready";
      t.notBefore = undefined;
      // Re-entered: it goes behind the tasks returned before it.
      this.inflight.delete(t.id);
      this.inflight.set(t.id, t);
      this.returned.push(t);
      this.dispatch(now);
    }
    await committed;
    this.hooks.notify("released", t, { workerId: worker, delayMs });
    return { ok: true, taskId: t.id, state: delayed ? "delayed" : "ready" };
  }

  /** Moves a task to the dead letters. Synchronous up to the append, like every change. */
  private kill(t: Task, reason: string): Promise<unknown> {
    if (t.worker !== undefined && this.byWorker.get(t.worker) === t) this.byWorker.delete(t.worker);
    this.dropLease(t);
    t.state = "dead";
    t.reason = reason;
    // Dead rows are grouped by the hour their retention ends, so a group expires all at once.
    const { hour, part } = this.parked.parkDead(t.expiresAt);
    const snapshot = { ...t };
    const { committed } = this.append(
      {
        kind: EventKind.Dead,
        taskId: t.id,
        reason,
        error: t.error,
        refTime: hour,
        refPart: part,
        expiresAt: t.expiresAt,
      },
      at => [
        {
          kind: "dead",
          row: {
            slot: hour,
            part,
            dueAt: 0,
            pos: at,
            taskId: snapshot.id,
            seq: snapshot.seq,
            clientId: snapshot.clientId,
            src: snapshot.src,
            body: snapshot.body,
            attempt: snapshot.attempt,
            maxAttempts: snapshot.maxAttempts,
            expiresAt: snapshot.expiresAt,
            error: snapshot.error,
            errorPos: snapshot.error ? undefined : snapshot.errorPos,
            reason,
          },
        },
        {
          kind: "hint",
          taskId: snapshot.id,
          hint: { kind: "dead", hour, part, pos: at },
          at,
          expiresAt: snapshot.expiresAt,
        },
      ],
    );
    this.remove(t, "dead");
    const notified = committed.then(() => this.hooks.notify("dead", t, { reason }));
    // Nobody waits for a kill during fetch; its failure abandons the queue anyway.
    notified.catch(() => undefined);
    return notified;
  }

  /**
   * A cancelled task whose worker let go of it (ack, release, lease expiry) ends now; its
   * cancellation outcome (for the workflow) stays where the cancel put it.
   */
  private endCancelled(t: Task): Promise<unknown> {
    const { committed } = this.append({
      kind: EventKind.Ack,
      taskId: t.id,
      attempt: t.attempt,
      expiresAt: t.expiresAt,
    });
    this.end(t, t.result, t.resultPos, "cancelled");
    const done = committed.then(() => (t.state === "handing-over" ? this.hooks.handover(t) : undefined));
    done.catch(() => undefined);
    return done;
  }

  // ---- producer and operator actions -------------------------------------------------------------

  /**
   * Cancels a task. A waiting, delayed or dead one ends now; a running one is flagged, its worker
   * learns it on its next update or fetch, and it ends when the worker lets go. With a workflow
   * token, the sealed cancellation (`sealCancel`) is handed over when it ends.
   */
  async cancel(taskId: string, sealCancel: (t: Task) => Promise<Sealed>): Promise<CancelOutcome> {
    this.lastUsed = Date.now();
    const t = this.inflight.get(taskId);
    if (t) return this.cancelInFlight(t, sealCancel);
    const target = await this.locateWaiting(taskId);
    if (!target) return { ok: false, state: (await this.status(taskId)).state, taskId };
    const result = target.task.hasToken ? await sealCancel(target.task) : undefined;
    if (this.inflight.has(taskId)) return this.cancel(taskId, sealCancel);
    // The awaits above let other calls run: the task must still be where we found it.
    const still =
      target.where === "ready"
        ? this.backlog.isWaiting(target.task.src)
        : target.where === "delayed"
          ? this.parked.isDueWaiting(target.ref)
          : !this.parked.isConsumed(target.ref.pos);
    if (!still) return { ok: false, state: (await this.status(taskId)).state, taskId };
    const base = target.task;
    const event: LogEvent = {
      kind: EventKind.Cancel,
      taskId,
      seq: base.seq,
      state: stateCode[target.where],
      attempt: base.attempt,
      maxAttempts: base.maxAttempts,
      cancelled: true,
      result,
      // With an outcome to hand over, the cancel is the task's new source: it carries the token.
      token: result ? target.token : undefined,
      expiresAt: result ? this.handoverExpiry(base) : base.expiresAt,
      flags: flagsOf({ ...base, cancelled: true }),
    };
    const writes: DerivedWrite[] = [];
    if (target.where === "ready") {
      event.ref = base.src;
      this.backlog.cancel(base.src);
      writes.push({ kind: "backlogCancel", src: base.src, expiresAt: base.expiresAt });
    } else if (target.where === "delayed") {
      const r = target.ref;
      Object.assign(event, { ref: r.pos, refPart: r.part, refTime: r.dueAt });
      this.parked.cancelDue(r.slot, r.pos);
      writes.push({
        kind: "dueCancel",
        minute: r.slot,
        part: r.part,
        dueAt: r.dueAt,
        pos: r.pos,
        expiresAt: base.expiresAt,
      });
    } else {
      const r = target.ref;
      Object.assign(event, { ref: r.pos, refPart: r.part, refTime: r.slot });
      this.parked.consumeDead(r.slot, r.pos);
      writes.push({ kind: "deadConsume", hour: r.slot, part: r.part, pos: r.pos, expiresAt: base.expiresAt });
    }
    const { at, committed } = this.append(event, at => [
      ...writes,
      { kind: "hint", taskId, hint: { kind: "cancelled" }, at, expiresAt: base.expiresAt },
    ]);
    let ended: Task | undefined;
    if (result) {
      // The workflow hears of it: the task is in flight until the hand-over is accepted.
      ended = {
        ...base,
        src: at,
        body: undefined,
        state: "handing-over",
        cancelled: true,
        result,
        resultPos: at,
      };
      this.inflight.set(taskId, ended);
      this.waitForHandover(ended);
    } else this.ended.set(taskId, "cancelled");
    await committed;
    this.hooks.notify("cancelled", ended ?? base, { running: false });
    if (ended) this.hooks.handover(ended);
    return { ok: true, state: "cancelled", taskId };
  }

  private async cancelInFlight(t: Task, sealCancel: (t: Task) => Promise<Sealed>): Promise<CancelOutcome> {
    if (t.state === "handing-over" || t.cancelled) {
      return { ok: t.cancelled, state: (await this.status(t.id)).state, taskId: t.id };
    }
    const result = t.hasToken ? await sealCancel(t) : undefined;
    const token = result ? (await this.bodyOf(t)).token : undefined;
    // The awaits let other calls run: the task may have ended or changed meanwhile.
    if (this.inflight.get(t.id) !== t || (t.state as string) === "handing-over" || t.cancelled) {
      return { ok: t.cancelled, state: (await this.status(t.id)).state, taskId: t.id };
    }
    t.cancelled = true;
    const running = t.state === "leased";
    const { at, committed } = this.append({
      kind: EventKind.Cancel,
      taskId: t.id,
      state: stateCode[running ? "leased" : "ready"],
      cancelled: true,
      result,
      token,
      expiresAt: result ? this.handoverExpiry(t) : t.expiresAt,
    });
    if (running) {
      t.result = result;
      t.resultPos = result ? at : undefined;
    } else this.end(t, result, result ? at : undefined, "cancelled");
    await committed;
    this.hooks.notify("cancelled", t, { running });
    if (!running && result) this.hooks.handover(t);
    return { ok: true, state: running ? "leased" : "cancelled", taskId: t.id };
  }

  /** Where a task that is not in flight waits: in the backlog, or in a parked row. */
  private async locateWaiting(taskId: string): Promise<
    | { where: "ready"; task: Task; token?: Sealed }
    | {
        where: "delayed" | "dead";
        task: Task;
        token?: Sealed;
        ref: { slot: number; part: number; dueAt: number; pos: number };
      }
    | undefined
  > {
    const inWindow = this.backlog.find(taskId);
    if (inWindow) return { where: "ready", task: inWindow, token: inWindow.body?.token };
    const entry = await this.indexEntry(taskId);
    if (!entry) return undefined;
    const hint = entry.hint;
    if (hint.kind === "delayed" || hint.kind === "dead") {
      const table = hint.kind === "delayed" ? "due" : "dead";
      const slot = hint.kind === "delayed" ? hint.minute : hint.hour;
      const dueAt = hint.kind === "delayed" ? hint.dueAt : 0;
      if (this.parked.isConsumed(hint.pos)) return undefined;
      await this.parked.whenDurable(table, slot, hint.part);
      const row = await this.deps.readParked(table, slot, hint.part, dueAt, hint.pos);
      if (!row || row.consumed || row.taskId !== taskId) return undefined;
      const ref = { slot, part: hint.part, dueAt, pos: hint.pos };
      if (hint.kind === "delayed" && !this.parked.isDueWaiting(ref)) return undefined;
      return {
        where: hint.kind,
        token: row.body.token,
        ref,
        task: {
          id: taskId,
          seq: row.seq,
          clientId: row.clientId,
          src: hint.pos,
          hasToken: row.body.token !== undefined,
          attempt: row.attempt,
          maxAttempts: row.maxAttempts,
          state: hint.kind,
          expiresAt: row.expiresAt,
          cancelled: false,
        },
      };
    }
    if (hint.kind !== "none" || !this.backlog.isWaiting(entry.pos)) return undefined;
    const source = await this.deps.readSource(entry.pos);
    if (!source || source.taskId !== taskId) return undefined;
    return {
      where: "ready",
      token: source.token,
      task: {
        id: taskId,
        seq: source.seq ?? entry.seq,
        clientId: entry.clientId,
        src: entry.pos,
        hasToken: source.token !== undefined,
        attempt: source.attempt ?? 0,
        maxAttempts: source.maxAttempts ?? 0,
        state: "ready",
        expiresAt: source.expiresAt,
        cancelled: false,
      },
    };
  }

  /**
   * Puts dead tasks (all, or the given ones) back at the end of the backlog with a fresh attempt
   * count. Dead rows are read page by page; one redrive runs at a time.
   */
  redrive(taskIds?: string[]): Promise<number> {
    this.lastUsed = Date.now();
    const run = this.redriving.then(() => this.redriveNow(taskIds));
    this.redriving = run.catch(() => undefined);
    return run;
  }

  private async redriveNow(taskIds?: string[]): Promise<number> {
    let n = 0;
    if (taskIds) {
      for (const id of new Set(taskIds)) {
        const entry = await this.indexEntry(id);
        if (entry?.hint.kind !== "dead" || this.parked.isConsumed(entry.hint.pos)) continue;
        await this.parked.whenDurable("dead", entry.hint.hour, entry.hint.part);
        const row = await this.deps.readParked("dead", entry.hint.hour, entry.hint.part, 0, entry.hint.pos);
        if (row && !row.consumed && row.taskId === id && (await this.redriveRow(row))) n++;
      }
      return n;
    }
    for (;;) {
      const page = await this.parked.list("dead", 0, 200);
      if (page.length === 0) return n;
      const commits: Promise<boolean>[] = page.map(row => this.redriveRow(row));
      n += (await Promise.all(commits)).filter(Boolean).length;
    }
  }

  /** One dead row back to the backlog: a carry (a new ready source) that consumes the row. */
  private redriveRow(row: ParkedTask): Promise<boolean> {
    if (this.parked.isConsumed(row.pos) || this.closed || row.expiresAt <= Date.now()) return Promise.resolve(false);
    this.parked.consumeDead(row.slot, row.pos);
    const seq = this.nextSeq++;
    this.backlog.sourceAppended();
    const { committed } = this.append(
      {
        kind: EventKind.Carry,
        taskId: row.taskId,
        seq,
        clientId: row.clientId,
        value: row.body.value,
        token: row.body.token,
        attempt: 0,
        maxAttempts: row.maxAttempts,
        state: stateCode.ready,
        expiresAt: row.expiresAt,
        ref: row.pos,
        refPart: row.part,
        refTime: row.slot,
      },
      at => [
        { kind: "index", taskId: row.taskId, seq, pos: at, clientId: row.clientId, expiresAt: row.expiresAt },
        { kind: "deadConsume", hour: row.slot, part: row.part, pos: row.pos, expiresAt: row.expiresAt },
      ],
    );
    this.ended.delete(row.taskId);
    return committed.then(() => true);
  }

  /** Removes every waiting, delayed and dead task (running ones go on, like RabbitMQ's purge). */
  async purge(): Promise<number> {
    this.lastUsed = Date.now();
    const { at, committed } = this.append({
      kind: EventKind.Purge,
      taskId: "",
      // The purge marker must outlive every purged task's rows, or they would come back on a takeover.
      expiresAt: Date.now() + this.deps.limits.retentionMs,
    });
    let purged = this.backlog.purge(at);
    const parked = this.parked.purge(at);
    purged += parked.delayed + parked.dead;
    for (const t of [...this.inflight.values()]) {
      if (t.state === "ready") {
        this.remove(t, "cancelled");
        purged++;
      }
    }
    this.returned = [];
    await committed;
    return purged;
  }

  /** Records that the workflow accepted the task's outcome; the task ends. */
  async handed(t: Task): Promise<void> {
    if (this.inflight.get(t.id) !== t) return;
    const { committed } = this.append({ kind: EventKind.Handed, taskId: t.id, expiresAt: t.expiresAt });
    this.remove(t, t.cancelled ? "cancelled" : "done");
    await committed;
  }

  /** The token and sealed outcome of a task waiting to be handed over (the outcome's event carries both). */
  async handoverData(t: Task): Promise<{ token?: Sealed; result?: Sealed }> {
    if (t.result && t.body) return { token: t.body.token, result: t.result };
    const e = t.resultPos !== undefined ? await this.deps.readSource(t.resultPos) : null;
    return { token: e?.token ?? t.body?.token, result: t.result ?? e?.result };
  }

  /** How long an event carrying a workflow outcome is kept. */
  private handoverExpiry(t: Pick<Task, "expiresAt">): number {
    return Math.max(t.expiresAt, Date.now() + this.deps.limits.handoverRetentionMs);
  }

  // ---- housekeeping ------------------------------------------------------------------------------

  /** Forgets tasks whose retention has ended; their rows expire on their own. */
  dropExpired(now = Date.now()): number {
    let n = 0;
    for (const t of [...this.inflight.values()]) {
      // A pending hand-over outlives its task's retention: the workflow waits for it.
      if (t.expiresAt <= now && t.state !== "handing-over") {
        this.remove(t, "unknown");
        n++;
      }
    }
    this.backlog.tick(now);
    return n;
  }

  /** The state a checkpoint keeps (no bodies). Taken synchronously, between two appends. */
  snapshot(): Snapshot {
    this.advanceSlots(Date.now());
    return {
      nextSeq: this.nextSeq,
      backlog: this.backlog.snapshot(),
      parked: this.parked.snapshot(),
      inflight: [...this.inflight.values()].map(t => ({
        ...t,
        body: undefined,
        progress: undefined,
        error: undefined,
        result: undefined,
      })),
      lastAcked: [...this.lastAcked].slice(-REMEMBERED_ACKS),
      completions: { slot: this.completionSlot, counts: [...this.completions] },
    };
  }

  // ---- read access for the views (queue-views.ts) ------------------------------------------------

  inFlightTasks(): Task[] {
    return [...this.inflight.values()];
  }

  inFlightTask(taskId: string): Task | undefined {
    return this.inflight.get(taskId);
  }

  endedAs(taskId: string): PublicState | undefined {
    return this.ended.get(taskId);
  }

  get backlogView(): Backlog {
    return this.backlog;
  }

  get parkedView(): Parked {
    return this.parked;
  }

  /** The task's entry in task_index, as it will be once the writes in flight land. */
  async indexEntry(taskId: string): Promise<IndexEntry | null> {
    const pending = this.deps.derived.pendingOf(taskId);
    const stored = pending?.entry ? null : await this.deps.readIndex(taskId);
    return overlayIndex(pending, stored);
  }

  /** A parked row by its key (for views). */
  parkedRow(table: "due" | "dead", slot: number, part: number, dueAt: number, pos: number): Promise<ParkedTask | null> {
    return this.deps.readParked(table, slot, part, dueAt, pos);
  }

  /** An event of the log by position (for views). */
  source(at: number): Promise<LogEvent | null> {
    return this.deps.readSource(at);
  }

  /** A sealed field of an in-flight task, from memory or from the log. */
  async sealedField(t: Task, field: "progress" | "error"): Promise<Sealed | undefined> {
    const inMemory = field === "progress" ? t.progress : t.error;
    if (inMemory) return inMemory;
    const at = field === "progress" ? t.progressPos : t.errorPos;
    return at === undefined ? undefined : (await this.deps.readSource(at))?.[field];
  }

  /** A task's body (value and token), from memory or from its source. */
  body(t: Task): Promise<TaskBody> {
    return this.bodyOf(t);
  }

  /** Status of one task, wherever it is. */
  status(taskId: string, now = Date.now()): Promise<TaskStatus> {
    return statusOf(this, taskId, now);
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

  completedPer10s(now: number): number[] {
    this.advanceSlots(now);
    return Array.from(
      { length: THROUGHPUT_SLOTS },
      (_, i) => this.completions[(this.completionSlot + 1 + i) % THROUGHPUT_SLOTS]!,
    );
  }
}
