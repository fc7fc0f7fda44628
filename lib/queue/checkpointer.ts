/**
 * Writes checkpoints: every `checkpointEvents` committed events (at least twice the tasks in
 * flight), or every `checkpointMs` while anything changes. The snapshot is taken at a log position
 * P in one synchronous step (so it is exactly the fold of every event before P), written to the
 * other slot of queue_checkpoint once every event before P is committed, and the owner row points
 * at it once every derived write of those events is durable. Two slots, overwritten in turn, keep a
 * queue's checkpoints to a fixed size.
 */
import { OwnershipLostError } from "../errors";
import { encodeSnapshot, type Snapshot } from "./checkpoint";
import type { EventLog } from "./event-log";
import type { OwnerLease } from "./owner-lease";
import type { QueueStore } from "./store";

export interface CheckpointOptions {
  checkpointEvents: number;
  checkpointMs: number;
}

/** Which slot the owner row points at now, and the version each slot holds. */
export interface SlotState {
  current: number;
  version: number;
  slotVersions: [number | null, number | null];
}

export class Checkpointer {
  private eventsSince = 0;
  private lastAt = Date.now();
  private running: Promise<void> | null = null;
  private slots: SlotState;

  constructor(
    private readonly store: QueueStore,
    private readonly log: EventLog,
    private readonly lease: OwnerLease,
    private readonly snapshot: () => Snapshot,
    private readonly inFlight: () => number,
    private readonly derivedBarrier: () => Promise<void>,
    slots: SlotState,
    private readonly options: CheckpointOptions,
    private readonly onFailure: (reason: string) => void,
  ) {
    this.slots = { ...slots, slotVersions: [...slots.slotVersions] };
    log.onCommitted(events => {
      this.eventsSince += events.length;
      if (this.eventsSince >= Math.max(this.options.checkpointEvents, 2 * this.inFlight())) void this.run();
    });
  }

  /** Checkpoints when the last one is older than checkpointMs and anything changed since. */
  tick(now = Date.now()): void {
    if (this.eventsSince > 0 && now - this.lastAt >= this.options.checkpointMs) void this.run();
  }

  /** Writes a checkpoint now (after the one running, if any). Resolves when the owner row points at it. */
  async now(): Promise<void> {
    if (this.running) await this.running.catch(() => undefined);
    await this.run(true);
  }

  private run(force = false): Promise<void> {
    if (this.running) return this.running;
    if (!force && this.eventsSince === 0) return Promise.resolve();
    this.running = this.write()
      .catch((err: Error) => {
        this.onFailure(`checkpoint failed: ${err.message}`);
        throw err;
      })
      .finally(() => {
        this.running = null;
      });
    this.running.catch(() => undefined);
    return this.running;
  }

  private async write(): Promise<void> {
    // One synchronous step: the position and the state, with no event in between.
    const at = this.log.nextPosition;
    const snapshot = this.snapshot();
    this.eventsSince = 0;
    this.lastAt = Date.now();
    await this.log.committedThrough(at);
    const slot = 1 - this.slots.current;
    const version = this.slots.version + 1;
    const queue = this.lease.queue;
    const applied = await this.store.writeCheckpoint(
      queue,
      slot,
      this.slots.slotVersions[slot] ?? null,
      this.lease.rangeId,
      version,
      encodeSnapshot(snapshot),
    );
    if (!applied) {
      this.lease.markLost("a newer owner wrote the checkpoint slot");
      throw new OwnershipLostError(queue, "a newer owner wrote the checkpoint slot");
    }
    this.slots.slotVersions[slot] = version;
    await this.derivedBarrier();
    await this.lease.setCheckpoint(at, slot, version);
    this.slots.current = slot;
    this.slots.version = version;
  }
}
