/**
 * This node's hold on one queue: the range it fenced with and the queue_owner row it keeps up to
 * date (lease, checkpoint pointer, partitions to replay and to seal). Every change of the row is an
 * LWT conditioned on the range and on the state last written, run one at a time, so the row never
 * goes back to an older state. A change that is not applied, or whose outcome is unknown, loses the
 * queue.
 */
import { OwnershipLostError } from "../errors";
import type { LogState, QueueStore } from "./store";
import { position, splitPosition, type BucketRef } from "./task";

export interface HeldRow {
  rangeId: number;
  node: string;
  leaseUntil: number;
  state: LogState;
  stateText: string | null;
  legacyText: string | null;
}

export class OwnerLease {
  private row: HeldRow;
  private chain: Promise<unknown> = Promise.resolve();
  private lostReason: string | null = null;

  constructor(
    private readonly store: QueueStore,
    readonly queue: string,
    row: HeldRow,
    private readonly leaseMs: number,
    /** This owner's fence lease (recorded in the row for a takeover to wait out). */
    private readonly fenceLeaseMs = 0,
  ) {
    this.row = { ...row, state: copyState(row.state) };
  }

  get rangeId(): number {
    return this.row.rangeId;
  }

  get state(): LogState {
    return this.row.state;
  }

  get lost(): string | null {
    return this.lostReason;
  }

  markLost(reason: string): void {
    this.lostReason ??= reason;
  }

  /** Applies `change` to the row with an LWT; throws when the range is no longer ours. */
  private update(change: (row: HeldRow) => Omit<HeldRow, "stateText" | "legacyText">): Promise<void> {
    const next = this.chain.then(async () => {
      if (this.lostReason) throw new OwnershipLostError(this.queue, this.lostReason);
      const wanted = change({ ...this.row, state: copyState(this.row.state) });
      let text: string | null;
      try {
        text = await this.store.updateOwner(this.queue, this.row, wanted);
      } catch (err) {
        // A timed-out LWT has an unknown outcome: only a new takeover can tell what the row holds.
        this.markLost(`owner row update failed: ${(err as Error).message}`);
        throw err;
      }
      if (text === null) {
        this.markLost("taken over by another node");
        throw new OwnershipLostError(this.queue, this.lostReason ?? "taken over");
      }
      this.row = { ...wanted, stateText: text, legacyText: null };
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  renew(): Promise<void> {
    return this.update(row => ({ ...row, leaseUntil: Date.now() + this.leaseMs }));
  }

  /**
   * Registers the partition the log rolls over to, before anything is written there. The previous
   * one leaves `open`: the log rolls over only once every batch of it is committed, so nothing more
   * can reach it.
   */
  addPartition(ref: BucketRef): Promise<void> {
    return this.update(row => ({
      ...row,
      state: { ...row.state, replay: [...row.state.replay, ref], open: [ref] },
    }));
  }

  /**
   * Points the row at a checkpoint (slot, version) that is the fold of every event before `at`: a
   * takeover replays from there, through the partitions that follow. Partitions of older ranges
   * leave `open`: this owner sealed them when it took over.
   */
  setCheckpoint(at: number, slot: number, version: number): Promise<void> {
    return this.update(row => {
      const p = splitPosition(at);
      const containing: BucketRef = { range: p.range, bucket: p.bucket };
      const later = row.state.replay.filter(b => position(b.range, b.bucket, 0) > position(p.range, p.bucket, 0));
      const open = row.state.open.filter(b => b.range === row.rangeId);
      return {
        ...row,
        leaseUntil: Date.now() + this.leaseMs,
        state: {
          ckpt: at,
          slot,
          version,
          replay: [containing, ...later],
          open: open.length > 0 ? open : [containing],
          // Only this owner's partitions are left open: its own lease is the one a takeover waits out.
          ...(this.fenceLeaseMs > 0 ? { fenceLeaseMs: this.fenceLeaseMs } : {}),
        },
      };
    });
  }

  /** Gives the queue up so that another node can take it at once. */
  release(): Promise<void> {
    // The log commits nothing on its fence lease any more (OwnedQueue.release): the next owner
    // need not wait one out.
    return this.update(row => ({
      ...row,
      node: "",
      leaseUntil: 0,
      state: { ...row.state, fenceLeaseMs: undefined },
    })).then(() => this.markLost("released"));
  }
}

function copyState(s: LogState): LogState {
  return { ...s, replay: [...s.replay], open: [...s.open] };
}
