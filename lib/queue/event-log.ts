/**
 * Group commit of a queue's events into fenced batches. One batch is in flight at a time; events
 * appended meanwhile go into the next one. When the current partition is full, the log rolls over
 * to a new one, registering it in queue_owner (IF range_id = ours) before creating and using it.
 * Any failure is final for this log: the owner must abandon the queue (see docs/ARCHITECTURE.md).
 */
import { OwnershipLostError, StorageUnavailableError } from "../errors";
import type { QueueEngineOptions } from "./options";
import type { BucketRef, QueueStore } from "./store";
import type { OwnerLease } from "./owner-lease";
import type { LogEvent } from "./task";

interface PendingEvent {
  event: LogEvent;
  bytes: number;
  resolve: (bucket: BucketRef) => void;
  reject: (err: Error) => void;
}

function sizeOf(e: LogEvent): number {
  return 200 + (e.value?.blob.length ?? 0) + (e.token?.blob.length ?? 0) + (e.result?.blob.length ?? 0);
}

export class EventLog {
  private pending: PendingEvent[] = [];
  private flushing = false;
  private failure: Error | null = null;
  private fenceWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private fenceReading = false;

  constructor(
    private readonly store: QueueStore,
    private readonly lease: OwnerLease,
    private readonly options: Pick<QueueEngineOptions, "bucketSize" | "maxBatchEvents" | "maxBatchBytes">,
    private current: BucketRef,
    private nextPos: number,
    private readonly onFailure: (reason: string) => void,
    private readonly onRollover: () => void,
  ) {}

  get currentBucket(): BucketRef {
    return this.current;
  }

  /** Resolves, with the partition it went into, once the event is committed. */
  append(event: LogEvent): Promise<BucketRef> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ event, bytes: sizeOf(event), resolve, reject });
      if (!this.flushing) queueMicrotask(() => void this.flush());
    });
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
        sealed = await this.store.isSealed(this.lease.queue, this.current);
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

  /** Resolves once everything appended so far is committed (or the log has failed). */
  async drain(): Promise<void> {
    while ((this.flushing || this.pending.length > 0) && !this.failure) await new Promise(r => setTimeout(r, 2));
  }

  /** Fails every waiting event; later appends fail at once. */
  fail(err: Error): void {
    this.failure ??= err;
    const waiting = this.pending;
    this.pending = [];
    for (const p of waiting) p.reject(this.failure);
  }

  private takeBatch(): PendingEvent[] {
    let bytes = 0;
    let n = 0;
    const most = Math.min(this.options.maxBatchEvents, this.options.bucketSize);
    while (n < this.pending.length && n < most) {
      const b = this.pending[n]!.bytes;
      if (n > 0 && bytes + b > this.options.maxBatchBytes) break;
      bytes += b;
      n++;
    }
    return this.pending.splice(0, n);
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    let batch: PendingEvent[] = [];
    try {
      while (this.pending.length > 0 && !this.failure) {
        batch = this.takeBatch();
        if (this.nextPos + batch.length > this.options.bucketSize) await this.rollover();
        const applied = await this.store.appendFenced(
          this.lease.queue,
          this.current,
          this.nextPos,
          batch.map(p => p.event),
        );
        if (!applied) throw new Error("the log partition was sealed by a takeover");
        this.nextPos += batch.length;
        const committedTo = this.current;
        for (const p of batch) p.resolve(committedTo);
        batch = [];
      }
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const failure = new OwnershipLostError(this.lease.queue, reason);
      for (const p of batch) p.reject(failure);
      this.fail(failure);
      this.onFailure(reason);
    } finally {
      this.flushing = false;
    }
  }

  private async rollover(): Promise<void> {
    const next: BucketRef = { range: this.lease.rangeId, bucket: this.current.bucket + 1 };
    await this.lease.addBucket(next);
    if (!(await this.store.createBucket(this.lease.queue, next))) {
      throw new Error("the next log partition exists already (sealed by a takeover)");
    }
    this.current = next;
    this.nextPos = 0;
    this.onRollover();
  }
}
