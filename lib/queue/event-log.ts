/**
 * The commit pipeline of a queue's events. An event gets its log position when it is appended
 * (synchronously, so memory order is log order). Pending events are written as plain
 * single-partition batches, up to `commitDepth` of them in flight at once; a batch is committed
 * once it and every batch before it completed and a fence read started after that found the
 * partition unsealed. Commits, their listeners and their callers go in log order. A batch never
 * spans two partitions: before the first event of the next partition is written, every batch of
 * the full one is committed, and the log registers the next partition in queue_owner (IF the owner
 * row is ours) and creates it. Any failure is final for this log: the owner must abandon the queue
 * (see docs/ARCHITECTURE.md, "Operations" and Invariants A and A').
 *
 * With a fence lease (`fenceLeaseMs` > 0), a fence read started at r that finds the partition
 * unsealed also commits every batch that completes before r + fenceLeaseMs (on this process's
 * monotonic clock): a takeover waits twice that long after its seal before it reads the partition,
 * so it reads such a batch (docs/ARCHITECTURE.md, "The fence lease"). Fence reads then run beside
 * the writes instead of after them, and a batch is usually committed as soon as it completes.
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
  /** Batches of this queue written but not yet committed, at most. */
  commitDepth: number;
  /** How long after its start a fence read that found the partition open covers completed batches (0: none). */
  fenceLeaseMs?: number;
}

/** A batch written (or being written) and not yet committed. */
interface Batch {
  events: PendingEvent[];
  done: boolean;
  /** When its write completed (monotonic ms), and the how-many-th completion it was. */
  doneAt: number;
  doneSeq: number;
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
  /** Batches written or being written, not committed yet, in log order. */
  private inflight: Batch[] = [];
  private pumpScheduled = false;
  private rolling = false;
  private failure: Error | null = null;
  private fenceWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private fenceReading = false;
  /** A fence read is wanted although nothing waits for one yet (fence lease: read beside the writes). */
  private fenceWanted = false;
  /** Start (monotonic ms) of the latest fence read of the current partition that found it open; -Infinity: none. */
  private fenceFrom = -Infinity;
  /** Batch completions so far (a fence read commits those that came before it started). */
  private completions = 0;
  private leaseMs: number;
  /** The partition being written (the fence read looks at it). */
  private written: BucketRef;
  private openedAt = Date.now();
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
    this.leaseMs = options.fenceLeaseMs ?? 0;
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

  /** Called after every commit, in log order, before the appenders hear of it. */
  onCommitted(listener: (events: CommittedEvent[]) => void): void {
    this.listeners.push(listener);
  }

  /** Called when the log opens its next partition (with that partition's first position). */
  onRollover(listener: (base: number) => void): void {
    this.rolloverListeners.push(listener);
  }

  private get idle(): boolean {
    return this.pending.length === 0 && this.inflight.length === 0 && !this.rolling;
  }

  /** Resolves once every event before position `at` is committed; rejects if the log fails first. */
  committedThrough(at: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.committed >= at || this.idle) return Promise.resolve();
    return new Promise((resolve, reject) => this.committedWaiters.push({ at, resolve, reject }));
  }

  append(event: LogEvent): { at: number; committed: Promise<void> } {
    if (this.next.pos >= this.options.bucketSize) this.next = { bucket: this.next.bucket + 1, pos: 0 };
    const at = position(this.lease.rangeId, this.next.bucket, this.next.pos++);
    if (this.failure) return { at, committed: Promise.reject(this.failure) };
    const committed = new Promise<void>((resolve, reject) => {
      this.pending.push({ at, event, bytes: sizeOf(event), resolve, reject });
    });
    this.schedulePump();
    return { at, committed };
  }

  /**
   * Resolves once a read that started after this call found the current partition unsealed (or,
   * with a fence lease, one that did less than the lease ago), so an answer from memory is still
   * the owner's answer. Concurrent callers share the next read.
   */
  confirmFence(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    // Within the fence lease of the last read that found the partition open: no takeover serves
    // before this answer (it waits out twice the lease after its seal).
    if (this.leaseHolds()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.fenceWaiters.push({ resolve, reject });
      this.startFenceReads();
    });
  }

  /**
   * Rewrites the open partition's fence flag with a fresh TTL once the partition is older than
   * `maxAgeMs` (a quiet queue can keep one partition open longer than the retention). An LWT.
   */
  async keepFence(maxAgeMs: number): Promise<void> {
    if (this.failure || this.rolling || Date.now() - this.openedAt < maxAgeMs) return;
    const ref = this.written;
    const open = await this.store.refreshFence(this.lease.queue, ref);
    if (!open) this.failWith(new OwnershipLostError(this.lease.queue, "the log partition was sealed by a takeover"));
    else if (ref === this.written) this.openedAt = Date.now();
  }

  /** No more commits on the fence lease (before a release: the next owner will not wait one out). */
  endLease(): void {
    this.leaseMs = 0;
  }

  /** Resolves once everything appended so far is committed; rejects if the log has failed. */
  async drain(): Promise<void> {
    while (!this.idle && !this.failure) await new Promise(r => setTimeout(r, 2));
    if (this.failure) throw this.failure;
  }

  /** Fails every event not committed yet; later appends fail at once. */
  fail(err: Error): void {
    this.failure ??= err;
    const waiting = [...this.inflight.flatMap(b => b.events), ...this.pending];
    this.inflight = [];
    this.pending = [];
    for (const p of waiting) p.reject(this.failure);
    const through = this.committedWaiters;
    this.committedWaiters = [];
    for (const w of through) w.reject(this.failure);
    const fence = this.fenceWaiters;
    this.fenceWaiters = [];
    for (const w of fence) w.reject(this.failure);
  }

  /** A failure of a write, a fence read or a rollover: the log is done, the owner abandons. */
  private failWith(err: unknown): void {
    if (this.failure) return;
    const reason = err instanceof Error ? err.message : String(err);
    this.fail(err instanceof OwnershipLostError ? err : new OwnershipLostError(this.lease.queue, reason));
    this.onFailure(reason);
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

  /**
   * Writes after the current turn: every caller answered in this turn appends first, so that what
   * they append shares a batch.
   */
  private schedulePump(): void {
    if (this.pumpScheduled || this.failure) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Starts writes while the pipeline has room; a rollover once the full partition is all committed. */
  private pump(): void {
    while (
      !this.failure &&
      !this.rolling &&
      this.pending.length > 0 &&
      this.inflight.length < this.options.commitDepth
    ) {
      const { range, bucket } = splitPosition(this.pending[0]!.at);
      if (bucket !== this.written.bucket) {
        if (this.inflight.length > 0) return; // the commits of the full partition restart the pump
        this.rolling = true;
        this.rollover({ range, bucket }).then(
          () => {
            this.rolling = false;
            this.pump();
            if (this.fenceWaiters.length > 0) this.startFenceReads();
          },
          err => this.failWith(err),
        );
        return;
      }
      const batch: Batch = { events: this.takeBatch(), done: false, doneAt: 0, doneSeq: 0 };
      this.inflight.push(batch);
      // Fence lease: start a read beside the write when the last one is getting old, so that it
      // has found the partition open by the time the write completes.
      if (this.leaseMs > 0 && performance.now() - this.fenceFrom > this.leaseMs / 2) {
        this.fenceWanted = true;
        this.startFenceReads();
      }
      const first = splitPosition(batch.events[0]!.at).pos;
      this.store
        .appendEvents(
          this.lease.queue,
          this.written,
          first,
          batch.events.map(p => p.event),
        )
        .then(
          () => {
            batch.done = true;
            batch.doneAt = performance.now();
            batch.doneSeq = ++this.completions;
            if (this.leaseMs > 0) this.commitCovered();
            if (this.inflight.includes(batch)) this.startFenceReads();
          },
          err => this.failWith(err),
        );
    }
  }

  private completedPrefix(): number {
    let n = 0;
    while (n < this.inflight.length && this.inflight[n]!.done) n++;
    return n;
  }

  private leaseHolds(): boolean {
    return this.leaseMs > 0 && !this.rolling && performance.now() - this.fenceFrom < this.leaseMs;
  }

  /**
   * How many leading batches are committed by the fence reads that found the partition open: those
   * that completed before the latest such read started (completion number at most `seqAtStart`),
   * and with a fence lease those that completed before its start (`fenceFrom`) + the lease.
   */
  private coveredPrefix(seqAtStart: number): number {
    const until = this.fenceFrom + this.leaseMs;
    let n = 0;
    for (; n < this.inflight.length; n++) {
      const b = this.inflight[n]!;
      if (!b.done) break;
      if (b.doneSeq > seqAtStart && !(this.leaseMs > 0 && b.doneAt < until)) break;
    }
    return n;
  }

  /** Commits the batches the latest fence read's lease covers, if any (a batch just completed). */
  private commitCovered(): void {
    if (this.failure || this.rolling) return;
    const n = this.coveredPrefix(0);
    if (n === 0) return;
    try {
      this.commit(n);
    } catch (err) {
      this.failWith(err);
    }
  }

  private startFenceReads(): void {
    if (!this.fenceReading && !this.failure) void this.readFences();
  }

  /**
   * Fence reads, one at a time, while batches wait for one or callers asked for one. A read that
   * finds the partition unsealed commits every batch that had completed before it started (and so
   * every batch before those), and answers the callers that asked before it started.
   */
  private async readFences(): Promise<void> {
    this.fenceReading = true;
    try {
      while (!this.failure) {
        // During a rollover the fence moves to the next partition: the waiters wait for it (no
        // batch waits then: a rollover starts only once every batch is committed).
        if (this.rolling) break;
        const ready = this.completedPrefix();
        if (ready === 0 && this.fenceWaiters.length === 0 && !this.fenceWanted) break;
        this.fenceWanted = false;
        const waiters = this.fenceWaiters;
        this.fenceWaiters = [];
        const ref = this.written;
        const startedAt = performance.now();
        const seqAtStart = this.completions;
        let sealed: boolean;
        try {
          sealed = await this.store.isSealed(this.lease.queue, ref);
        } catch (err) {
          if (ready > 0) {
            for (const w of waiters) w.reject(new StorageUnavailableError("fetch", (err as Error).message));
            this.failWith(err);
            break;
          }
          // Only answers from memory waited for this read: they fail, the queue stays.
          const failure = new StorageUnavailableError("fetch", (err as Error).message);
          for (const w of waiters) w.reject(failure);
          continue;
        }
        if (this.failure) {
          for (const w of waiters) w.reject(this.failure);
          break;
        }
        if (ref !== this.written || this.rolling) {
          // A rollover began meanwhile (only when no batch was waiting): read the next fence.
          this.fenceWaiters.unshift(...waiters);
          continue;
        }
        if (sealed) {
          for (const w of waiters)
            w.reject(new OwnershipLostError(this.lease.queue, "the log partition was sealed by a takeover"));
          this.failWith(new OwnershipLostError(this.lease.queue, "the log partition was sealed by a takeover"));
          break;
        }
        this.fenceFrom = Math.max(this.fenceFrom, startedAt);
        const covered = this.coveredPrefix(seqAtStart);
        if (covered > 0) {
          try {
            this.commit(covered);
          } catch (err) {
            // A listener failed: the state may be half applied; nothing more is answered.
            for (const w of waiters) w.reject(new OwnershipLostError(this.lease.queue, (err as Error).message));
            this.failWith(err);
            break;
          }
        }
        for (const w of waiters) w.resolve();
      }
    } finally {
      this.fenceReading = false;
    }
  }

  /** The first `n` batches in flight are committed: state, then callers, in log order. */
  private commit(n: number): void {
    const batches = this.inflight.slice(0, n);
    const committed = batches.flatMap(b => b.events);
    const events = committed.map(p => ({ at: p.at, event: p.event }));
    // A listener that throws leaves the batches in flight: failWith rejects their callers.
    for (const l of this.listeners) l(events);
    this.inflight.splice(0, n);
    this.committed = committed[committed.length - 1]!.at + 1;
    for (const p of committed) p.resolve();
    this.releaseCommittedWaiters();
    this.schedulePump();
  }

  private releaseCommittedWaiters(): void {
    if (this.committedWaiters.length === 0) return;
    const idle = this.idle;
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
    // Fence reads of the previous partition say nothing of this one.
    this.fenceFrom = -Infinity;
    this.openedAt = Date.now();
    // Positions are dense within a range: the first event of a partition is at pos 0.
    this.committed = position(next.range, next.bucket, 0);
    for (const l of this.rolloverListeners) l(this.committed);
  }
}
