/**
 * Rows derived from committed events: the task index, delayed and dead rows, and the marks that
 * consume them. They are written after their event is committed, with plain idempotent writes keyed
 * by that event's position, so writing one twice (a retry, a takeover redoing the replay, a late
 * write of a deposed owner) changes nothing. A checkpoint waits for the barrier: every derived write
 * of the events before it is durable (Invariant E in docs/ARCHITECTURE.md).
 */
import type { Sealed } from "../codec";
import type { DerivedWrite, ParkedSpec } from "./recovery";
import type { IndexEntry, ParkedHint, QueueStore } from "./store";
import type { ParkedTask, TaskBody } from "./task";

/** Reads a task's body and sealed fields back from the log by position. */
export class BodyLoader {
  constructor(
    private readonly store: Pick<QueueStore, "readEvent">,
    private readonly queue: string,
  ) {}

  async body(src: number): Promise<TaskBody> {
    const e = await this.store.readEvent(this.queue, src);
    if (!e?.value) throw new Error(`the source of a task (log position ${src}) is gone`);
    return { value: e.value, token: e.token };
  }

  /** A sealed field (progress, error, result, token) of the event at `at`. */
  async sealed(at: number, field: "progress" | "error" | "result" | "token"): Promise<Sealed | undefined> {
    const e = await this.store.readEvent(this.queue, at);
    return e?.[field];
  }
}

export interface DerivedHooks {
  /** A due or dead row is durable. */
  rowDurable(table: "due" | "dead", row: ParkedTask): void;
  /** The mark consuming the parked row parked at `pos` is durable. */
  markDurable(pos: number): void;
  /** The backlog_cancels row of a cancelled waiting task (source at `src`) is durable. */
  cancelDurable(src: number): void;
}

const RETRIES = 6;

/**
 * task_index entries written together, at most (an unlogged batch over this many partitions: one
 * request instead of one each; Cassandra warns past 10). Entries enqueued in the same turn (a
 * commit's adds) are grouped; one alone is written alone.
 */
export const INDEX_BATCH = 8;

/** Bytes of task ids a group of index entries holds at most: Cassandra warns of batches over 5 KiB. */
const INDEX_BATCH_ID_BYTES = 2048;

/** task_index writes of one task that are not durable yet: its entry (source) and its latest hint. */
export interface PendingIndex {
  entry?: IndexEntry & { at: number };
  /** `landed`: durable already, kept while the entry's own write is in flight (see settleIndex). */
  hint?: { hint: ParkedHint; at: number; landed?: boolean };
}

/** What task_index says of a task once `pending` lands over `stored` (the later event wins, as in the table). */
export function overlayIndex(pending: PendingIndex | undefined, stored: IndexEntry | null): IndexEntry | null {
  if (!pending) return stored;
  const e = pending.entry;
  const base: IndexEntry | null = e ? { seq: e.seq, pos: e.pos, clientId: e.clientId, hint: e.hint } : stored;
  if (!base) return null;
  // A hint at the entry's own position (a delayed add's) is newer than the entry's "none".
  if (pending.hint && (!e || pending.hint.at >= e.at)) return { ...base, hint: pending.hint.hint };
  return base;
}

type IndexJob = Extract<DerivedWrite, { kind: "index" }>;

interface Job {
  write: DerivedWrite;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class DerivedWriter {
  private readonly queued: Job[] = [];
  private readonly unfinished = new Set<Promise<void>>();
  private active = 0;
  private failure: Error | null = null;
  private readonly roomWaiters: (() => void)[] = [];
  private readonly highWater: number;
  /** task_index writes not durable yet, so that lookups in the meantime find them. */
  private readonly pendingIndex = new Map<string, PendingIndex>();
  private pumpScheduled = false;

  constructor(
    private readonly store: QueueStore,
    private readonly queue: string,
    private readonly bodies: BodyLoader,
    private readonly hooks: DerivedHooks,
    private readonly onFailure: (reason: string) => void,
    private readonly concurrency = 32,
  ) {
    this.highWater = 4 * concurrency;
  }

  /** Starts (or queues) a derived write. */
  enqueue(write: DerivedWrite): void {
    if (this.failure) return;
    if (write.kind === "index" || write.kind === "hint") {
      const p = this.pendingIndex.get(write.taskId) ?? {};
      if (write.kind === "index") {
        p.entry = {
          seq: write.seq,
          pos: write.pos,
          clientId: write.clientId,
          hint: write.delivered ? { kind: "delivered" } : { kind: "none" },
          at: write.pos,
        };
      } else p.hint = { hint: write.hint, at: write.at };
      this.pendingIndex.set(write.taskId, p);
    }
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => undefined);
    this.unfinished.add(done);
    const settle = () => {
      this.unfinished.delete(done);
      this.makeRoom();
    };
    done.then(settle, settle);
    this.queued.push({ write, done, resolve, reject });
    // The rest of this turn's writes (a commit applies a whole batch of events) join the queue
    // before it is pumped, so that their index entries can share requests.
    if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      queueMicrotask(() => {
        this.pumpScheduled = false;
        this.pump();
      });
    }
  }

  /**
   * What task_index will say of a task once the writes in flight land. Take it before reading the
   * stored row (`overlay` then applies it): a write that lands during the read is still counted.
   */
  pendingOf(taskId: string): PendingIndex | undefined {
    const p = this.pendingIndex.get(taskId);
    return p && { ...p };
  }

  /** Whether task_index writes of this task are in flight (the add, or a hint). */
  hasPending(taskId: string): boolean {
    return this.pendingIndex.has(taskId);
  }

  /** Whether the entry itself (not only a hint) is being written, so no read is needed. */
  hasPendingEntry(taskId: string): boolean {
    return this.pendingIndex.get(taskId)?.entry !== undefined;
  }

  /** Resolves once every write enqueued so far is durable; rejects if any failed for good. */
  async barrier(): Promise<void> {
    if (this.failure) throw this.failure;
    await Promise.all([...this.unfinished]);
    if (this.failure) throw this.failure;
  }

  get pending(): number {
    return this.unfinished.size;
  }

  /**
   * Resolves when fewer than `highWater` writes are waiting: appenders that create derived rows wait
   * here, so a burst of adds is paced by what Cassandra absorbs instead of piling up in memory.
   */
  room(): Promise<void> {
    if (this.unfinished.size < this.highWater || this.failure) return Promise.resolve();
    return new Promise(resolve => this.roomWaiters.push(resolve));
  }

  /** Lets waiting appenders go on, one per free place (all of them once nothing is pending). */
  private makeRoom(): void {
    const free = this.failure || this.unfinished.size === 0 ? Infinity : this.highWater - this.unfinished.size;
    for (let i = 0; i < free && this.roomWaiters.length > 0; i++) this.roomWaiters.shift()!();
  }

  private pump(): void {
    while (this.active < this.concurrency && this.queued.length > 0) {
      const jobs = this.take();
      this.active++;
      void this.run(jobs).finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  /**
   * The next job, with up to INDEX_BATCH - 1 more index entries from the queue when it is one.
   * Taking later entries ahead of other kinds of writes is safe: every derived write is stamped
   * with its event's position, so the order they land in does not matter (barriers wait for all).
   */
  private take(): Job[] {
    const first = this.queued.shift()!;
    if (first.write.kind !== "index") return [first];
    const jobs = [first];
    let idBytes = Buffer.byteLength(first.write.taskId);
    for (let i = 0; i < this.queued.length && jobs.length < INDEX_BATCH;) {
      const w = this.queued[i]!.write;
      if (w.kind !== "index") {
        i++;
        continue;
      }
      idBytes += Buffer.byteLength(w.taskId);
      // Long ids (up to 256 characters of up to 3 bytes each): fewer of them to a group.
      if (idBytes > INDEX_BATCH_ID_BYTES) break;
      jobs.push(this.queued.splice(i, 1)[0]!);
    }
    return jobs;
  }

  private async run(jobs: Job[]): Promise<void> {
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < RETRIES && !this.failure; attempt++) {
      if (attempt > 0) await new Promise(r => setTimeout(r, 50 * 2 ** attempt));
      try {
        if (jobs.length === 1) await this.apply(jobs[0]!.write);
        else await this.applyIndexes(jobs.map(j => j.write as IndexJob));
        for (const job of jobs) job.resolve();
        return;
      } catch (err) {
        lastError = err as Error;
      }
    }
    const failure = this.failure ?? new Error(`a derived write (${jobs[0]!.write.kind}) failed: ${lastError?.message}`);
    this.failure ??= failure;
    for (const job of jobs) job.reject(failure);
    this.onFailure(failure.message);
  }

  /** Several tasks' index entries in one request (see `QueueStore.writeIndexes`). */
  private async applyIndexes(writes: IndexJob[]): Promise<void> {
    await this.store.writeIndexes(this.queue, writes);
    for (const w of writes) this.settledIndex(w);
  }

  private async apply(w: DerivedWrite): Promise<void> {
    const q = this.queue;
    switch (w.kind) {
      case "index":
        await this.store.writeIndex(q, w.taskId, w.seq, w.pos, w.clientId, w.expiresAt, w.delivered ?? false);
        this.settledIndex(w);
        return;
      case "hint":
        await this.store.writeHint(q, w.taskId, w.hint, w.at, w.expiresAt);
        // While the entry's own write is still in flight, the overlay takes the entry from memory
        // and does not read the row: keep the landed hint in memory until the entry lands too.
        this.settleIndex(w.taskId, p =>
          p.hint?.at === w.at ? { ...p, hint: p.entry ? { ...p.hint, landed: true } : undefined } : p,
        );
        return;
      case "due":
      case "dead": {
        const row = await this.rowOf(w.row);
        if (w.kind === "due") await this.store.writeDue(q, row);
        else await this.store.writeDead(q, row);
        this.hooks.rowDurable(w.kind, row);
        return;
      }
      case "dueCancel":
        await this.store.markDueCancelled(q, w.minute, w.part, w.dueAt, w.pos, w.expiresAt);
        this.hooks.markDurable(w.pos);
        return;
      case "deadConsume":
        await this.store.markDeadConsumed(q, w.hour, w.part, w.pos, w.expiresAt);
        this.hooks.markDurable(w.pos);
        return;
      case "backlogCancel":
        await this.store.writeBacklogCancel(q, w.src, w.expiresAt);
        this.hooks.cancelDurable(w.src);
        return;
    }
  }

  /** The entry `w` is durable. A hint that landed first was kept for the overlay (below): the row is whole now. */
  private settledIndex(w: IndexJob): void {
    this.settleIndex(w.taskId, p =>
      p.entry?.at === w.pos ? { entry: undefined, hint: p.hint?.landed ? undefined : p.hint } : p,
    );
  }

  private settleIndex(taskId: string, change: (p: PendingIndex) => PendingIndex): void {
    const p = this.pendingIndex.get(taskId);
    if (!p) return;
    const next = change(p);
    if (!next.entry && !next.hint) this.pendingIndex.delete(taskId);
    else this.pendingIndex.set(taskId, next);
  }

  /** The full parked row, its body (and error) read from the log when the event did not carry them. */
  private async rowOf(spec: ParkedSpec): Promise<ParkedTask> {
    const body = spec.body ?? (await this.bodies.body(spec.src));
    const error =
      spec.error ?? (spec.errorPos !== undefined ? await this.bodies.sealed(spec.errorPos, "error") : undefined);
    return {
      slot: spec.slot,
      part: spec.part,
      dueAt: spec.dueAt,
      pos: spec.pos,
      taskId: spec.taskId,
      seq: spec.seq,
      clientId: spec.clientId,
      body,
      attempt: spec.attempt,
      maxAttempts: spec.maxAttempts,
      expiresAt: spec.expiresAt,
      error,
      reason: spec.reason,
      consumed: false,
    };
  }
}
