/**
 * This node's hold on one queue: the range_id it fenced with and the queue_owner row it keeps
 * up to date. Every change of the row (renewal, bucket list, release) is an LWT conditioned on the
 * range, run one at a time, so the row never goes back to an older bucket list.
 */
import { OwnershipLostError } from "../errors";
import type { BucketRef, OwnerRow, QueueStore } from "./store";

export function bucketKey(ref: BucketRef): string {
  return `${ref.range}:${ref.bucket}`;
}

export class OwnerLease {
  private row: OwnerRow;
  private chain: Promise<unknown> = Promise.resolve();
  private lostReason: string | null = null;

  constructor(
    private readonly store: QueueStore,
    readonly queue: string,
    row: OwnerRow,
    private readonly leaseMs: number,
  ) {
    this.row = { ...row, buckets: [...row.buckets] };
  }

  get rangeId(): number {
    return this.row.rangeId;
  }

  get buckets(): readonly BucketRef[] {
    return this.row.buckets;
  }

  get lost(): string | null {
    return this.lostReason;
  }

  markLost(reason: string): void {
    this.lostReason ??= reason;
  }

  /** Applies `change` to the row with an LWT; throws when the range is no longer ours. */
  private update(change: (row: OwnerRow) => OwnerRow): Promise<void> {
    const next = this.chain.then(async () => {
      if (this.lostReason) throw new OwnershipLostError(this.queue, this.lostReason);
      const wanted = change({ ...this.row, buckets: [...this.row.buckets] });
      const applied = await this.store.updateOwner(this.queue, this.row, wanted);
      if (!applied) {
        this.markLost("taken over by another node");
        throw new OwnershipLostError(this.queue, this.lostReason ?? "taken over");
      }
      this.row = wanted;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  renew(): Promise<void> {
    return this.update(row => ({ ...row, leaseUntil: Date.now() + this.leaseMs }));
  }

  addBucket(ref: BucketRef): Promise<void> {
    return this.update(row => ({ ...row, buckets: [...row.buckets, ref] }));
  }

  /** Drops the given partitions from the open list (they hold no live task any more). */
  retireBuckets(keys: Set<string>): Promise<void> {
    return this.update(row => ({ ...row, buckets: row.buckets.filter(b => !keys.has(bucketKey(b))) }));
  }

  /** Gives the queue up so that another node can take it at once. */
  release(): Promise<void> {
    return this.update(row => ({ ...row, node: "", leaseUntil: 0 })).then(() => this.markLost("released"));
  }
}
