/**
 * Group commit of a queue's events into fenced batches. An event gets its log position when it is
 * appended (synchronously, so memory order is log order); one batch is in flight at a time, and
 * events appended meanwhile go into the next one. A batch never spans two partitions: before the
 * first event of the next partition is written, the log registers that partition in queue_owner
 * (IF range_id = ours) and creates it. Any failure is final for this log: the owner must abandon
 * the queue (see docs/ARCHITECTURE.md).
 */
import { OwnershipLostError, StorageUnavailableError } from "../errors";
import type { OwnerLease } from "./owner-lease";
import type { QueueStore } from "./store";
import { MAX_BUCKETS, position, splitPosition, type BucketRef, type LogEvent } from "./task";

/** An event with the position it was committed at. */
export interface CommittedEvent {
  at: number;
  event: LogEvent;
}

/** What the queue state sees of its log. */
export interface LogWriter {
  /** Appends an event; its position is known at once, `committed` settles when it is durable. */
  append(event: LogEvent): { at: number; committed: Promise<void> };
  /** Resolves once a read started after this call found the log not sealed (see G3). */
  confirmFence(): Promise<void>;
  /** Position just after the last committed event: everything before it is durable. */
  readonly committedEnd: number;
  /** Position the next appended event will get. */
  readonly nextPosition: number;
}

export interface EventLogOptions {
  bucketSize: number;
  maxBatchEvents: number;
  maxBatchBytes: number;
}

interface PendingEvent {
  at: number;
  event: LogEvent;
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

function sizeOf(e: LogEvent): number {
  return (
    200 +
    (e.value?.blob.length ?? 0) +
    (e.token?.blob.length ?? 0) +
    (e.result?.blob.length ?? 0) +
    (e.progress?.blob.length ?? 0) +
    (e.error?.blob.length ?? 0)
  );
}

export class EventLog implements LogWriter {
  private pending: PendingEvent[] = [];
  private flushing = false;
  private failure: Error | null = null;
  private fenceWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private fenceReading = false;
  /** The partition the last committed batch went to (the fence read looks at it). */
  private written: BucketRef;
  private next: { bucket: number; pos: number };
  private committed: number;
  private readonly listeners: ((events: CommittedEvent[]) => void)[] = [];
  private readonly rolloverListeners: ((base: number) => void)[] = [];
  private committedWaiters: { at: number; resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(
    private readonly store: QueueStore,
    private readonly lease: OwnerLease,
    private readonly options: EventLogOptions,
    start: BucketRef,
    private readonly onFailure: (reason: string) => void,
  ) {
    this.written = start;
    this.next = { bucket: start.bucket, pos: 0 };
    this.committed = position(start.range, start.bucket, 0);
  }

  get currentBucket(): BucketRef {
    return this.written;
  }

  get committedEnd(): number {
    return this.committed;
  }

  get nextPosition(): number {
    return position(this.lease.rangeId, this.next.bucket, this.next.pos);
  }

  get failed(): Error | null {
    return this.failure;
  }

  /** Called after every committed batch, in log order, before the appenders hear of it. */
  onCommitted(listener: (events: CommittedEvent[]) => void): void {
    this.listeners.push(listener);
  }

  /** Called when the log opens its next partition (with that partition's first position). */
  onRollover(listener: (base: number) => void): void {
    this.rolloverListeners.push(listener);
  }

  /** Resolves once every event before position `at` is committed; rejects if the log fails first. */
  committedThrough(at: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.committed >= at || (this.pending.length === 0 && !this.flushing)) return Promise.resolve();
    return new Promise((resolve, reject) => this.committedWaiters.push({ at, resolve, reject }));
  }

  append(event: LogEvent): { at: number; committed: Promise<void> } {
    if (this.next.pos >= this.options.bucketSize) this.next = { bucket: this.next.bucket + 1, pos: 0 };
    const at = position(this.lease.rangeId, this.next.bucket, this.next.pos++);
    if (this.failure) return { at, committed: Promise.reject(this.failure) };
    const committed = new Promise<void>((resolve, reject) => {
      this.pending.push({ at, event, bytes: sizeOf(event), resolve, reject });
    });
    if (!this.flushing) {
      this.flushing = true;
      // After the current turn's microtasks: every caller answered in this turn appends first.
      setImmediate(() => void this.flush());
    }
    return { at, committed };
  }

  /**
   * Resolves once a read that started after this call found the current partition unsealed, so an
   * answer from memory is still the owner's answer. Concurrent callers share the next read.
   */
  confirmFence(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.fenceWaiters.push({ resolve, reject });
      if (!this.fenceReading) void this.readFence();
    });
  }

  private async readFence(): Promise<void> {
    this.fenceReading = true;
    while (this.fenceWaiters.length > 0) {
      const waiters = this.fenceWaiters;
      this.fenceWaiters = [];
      let sealed: boolean;
      try {
        sealed = await this.store.isSealed(this.lease.queue, this.written);
      } catch (err) {
        const failure = new StorageUnavailableError("fetch", (err as Error).message);
        for (const w of waiters) w.reject(failure);
        continue;
      }
      if (sealed) {
        const reason = "the log partition was sealed by a takeover";
        this.fail(new OwnershipLostError(this.lease.queue, reason));
        for (const w of [...waiters, ...this.fenceWaiters]) w.reject(this.failure!);
        this.fenceWaiters = [];
        this.onFailure(reason);
        break;
      }
      for (const w of waiters) w.resolve();
    }
    this.fenceReading = false;
  }

  /** Resolves once everything appended so far is committed; rejects if the log has failed. */
  async drain(): Promise<void> {
    while ((this.flushing || this.pending.length > 0) && !this.failure) await new Promise(r => setTimeout(r, 2));
    if (this.failure) throw this.failure;
  }

  /** Fails every waiting event; later appends fail at once. */
  fail(err: Error): void {
    this.failure ??= err;
    const waiting = this.pending;
    this.pending = [];
    for (const p of waiting) p.reject(this.failure);
    const through = this.committedWaiters;
    this.committedWaiters = [];
    for (const w of through) w.reject(this.failure);
  }

  /** The next batch: events of one partition, within the size limits. */
  private takeBatch(): PendingEvent[] {
    const first = this.pending[0]!;
    const bucket = splitPosition(first.at).bucket;
    let bytes = 0;
    let n = 0;
    while (n < this.pending.length && n < this.options.maxBatchEvents) {
      const p = this.pending[n]!;
      if (splitPosition(p.at).bucket !== bucket) break;
      if (n > 0 && bytes + p.bytes > this.options.maxBatchBytes) break;
      bytes += p.bytes;
      n++;
    }
    return this.pending.splice(0, n);
  }

  private async flush(): Promise<void> {
    let batch: PendingEvent[] = [];
    try {
      while (this.pending.length > 0 && !this.failure) {
        batch = this.takeBatch();
        const { range, bucket, pos } = splitPosition(batch[0]!.at);
        if (bucket !== this.written.bucket) await this.rollover({ range, bucket });
        const applied = await this.store.appendFenced(
          this.lease.queue,
          { range, bucket },
          pos,
          batch.map(p => p.event),
        );
        if (!applied) throw new Error("the log partition was sealed by a takeover");
        this.committed = batch[batch.length - 1]!.at + 1;
        const events = batch.map(p => ({ at: p.at, event: p.event }));
        for (const l of this.listeners) l(events);
        for (const p of batch) p.resolve();
        batch = [];
        this.releaseCommittedWaiters();
        // The callers just answered often append again at once (a worker's ack, then its next
        // fetch): let them, so that they share the next batch with what waited meanwhile.
        await new Promise(r => setImmediate(r));
      }
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const failure = err instanceof OwnershipLostError ? err : new OwnershipLostError(this.lease.queue, reason);
      for (const p of batch) p.reject(failure);
      this.fail(failure);
      this.onFailure(reason);
    } finally {
      this.flushing = false;
      this.releaseCommittedWaiters();
    }
  }

  private releaseCommittedWaiters(): void {
    if (this.committedWaiters.length === 0) return;
    const idle = this.pending.length === 0;
    const still: typeof this.committedWaiters = [];
    for (const w of this.committedWaiters) {
      if (this.committed >= w.at || idle) w.resolve();
      else still.push(w);
    }
    this.committedWaiters = still;
  }

  private async rollover(next: BucketRef): Promise<void> {
    // A range holds 2^16 partitions; the owner then gives the queue up and takes it again, which
    // starts a new range (a takeover of its own queue).
    if (next.bucket >= MAX_BUCKETS)
      throw new Error("the range's log positions are used up; the queue moves to a new range");
    await this.lease.addPartition(next);
    if (!(await this.store.createBucket(this.lease.queue, next))) {
      throw new Error("the next log partition exists already (sealed by a takeover)");
    }
    this.written = next;
    // Positions are dense within a range: the first event of a partition is at pos 0.
    this.committed = position(next.range, next.bucket, 0);
    for (const l of this.rolloverListeners) l(this.committed);
  }
}
