/**
 * A queue this node owns: its lease, log, state, windows, derived writer and checkpointer, wired
 * together, and what the owner does over time (renewals, checkpoints, expiry). Built by a takeover
 * (takeover.ts); dropped on release, on idle, or when any write fails (abandon).
 */
import { OwnershipLostError } from "../errors";
import { Backlog, LogPager } from "./backlog";
import { Checkpointer, type SlotState } from "./checkpointer";
import { BodyLoader, DerivedWriter } from "./derived-writer";
import { EventLog } from "./event-log";
import { IndexLookups } from "./index-lookups";
import type { QueueEngineOptions } from "./options";
import type { OwnerLease } from "./owner-lease";
import { Parked } from "./parked";
import type { QueueKey } from "./queue-key";
import { QueueState, type StateHooks } from "./queue-state";
import type { Recovered } from "./recovery";
import type { QueueStore } from "./store";
import { position, type BucketRef } from "./task";

/** A workflow outcome is kept at least this long, even when its task's retention ends sooner. */
const HANDOVER_RETENTION_MS = 86_400_000;

export interface OwnedQueueDeps {
  store: QueueStore;
  options: QueueEngineOptions;
  hooks: StateHooks;
  /** The queue must be dropped: a write failed, or the fence says another node took it. */
  onFailure(reason: string): void;
  warn(message: string): void;
}

export class OwnedQueue {
  readonly log: EventLog;
  readonly state: QueueState;
  readonly derived: DerivedWriter;
  readonly checkpointer: Checkpointer;
  private readonly backlog: Backlog;
  private readonly parked: Parked;
  private timer: NodeJS.Timeout | undefined;
  private dropped = false;
  /** What the takeover that built this queue read and rewrote (it never grows with the backlog). */
  readonly takeover: { events: number; derived: number };

  constructor(
    readonly key: QueueKey,
    readonly lease: OwnerLease,
    start: BucketRef,
    recovered: Recovered,
    slots: SlotState,
    private readonly deps: OwnedQueueDeps,
  ) {
    const { store, options } = deps;
    this.takeover = { events: recovered.replayed, derived: recovered.redo.length };
    const retentionMs = options.retentionSeconds * 1000;
    const fail = (reason: string) => this.deps.onFailure(reason);
    this.log = new EventLog(store, lease, options, start, fail);
    const bodies = new BodyLoader(store, key.id);
    const pager = new LogPager(store, key.id, () => ({
      segments: this.backlog.segments,
      current: this.log.currentBucket,
      openedAt: base => this.backlog.openedAt(base),
      retentionMs,
    }));
    const readFailed = (err: Error) => fail(`reading the backlog failed: ${err.message}`);
    this.backlog = new Backlog(recovered.backlog, {
      reader: pager,
      log: this.log,
      limits: options,
      readCancels: ref => store.readBacklogCancels(key.id, ref),
      onReadError: readFailed,
      onLoaded: () => this.state.dispatch(),
    });
    this.backlog.partitionOpened(position(start.range, start.bucket, 0), Date.now());
    this.log.onRollover(base => this.backlog.partitionOpened(base, Date.now()));
    this.parked = new Parked(
      recovered.parked,
      {
        readDue: (minute, part, after, limit) => store.readDue(key.id, minute, part, after, limit),
        readDead: (hour, part, afterPos, limit) => store.readDead(key.id, hour, part, afterPos, limit),
      },
      options,
      readFailed,
      () => this.state.dispatch(),
      message => this.deps.warn(`${key.id}: ${message}`),
    );
    this.parked.setPurgeBound(recovered.backlog.purgeBound);
    this.derived = new DerivedWriter(
      store,
      key.id,
      bodies,
      {
        rowDurable: (table, row) => this.parked.rowDurable(table, row),
        markDurable: pos => this.parked.markDurable(pos),
        cancelDurable: src => this.backlog.cancelDurable(src),
      },
      fail,
    );
    const indexLookups = new IndexLookups(store, key.id);
    this.state = new QueueState(
      {
        log: this.log,
        backlog: this.backlog,
        parked: this.parked,
        derived: this.derived,
        readIndex: taskId => indexLookups.read(taskId),
        readSource: at => store.readEvent(key.id, at),
        readParked: (table, slot, part, dueAt, pos) =>
          table === "due"
            ? store.readDueRow(key.id, slot, part, dueAt, pos)
            : store.readDeadRow(key.id, slot, part, pos),
        loadBody: src => bodies.body(src),
        hooks: deps.hooks,
        limits: { maxLeaseMs: options.maxLeaseMs, retentionMs, handoverRetentionMs: HANDOVER_RETENTION_MS },
      },
      recovered,
    );
    this.log.onCommitted(events => this.state.committed(events));
    this.checkpointer = new Checkpointer(
      store,
      this.log,
      lease,
      () => this.state.snapshot(),
      () => this.state.inFlightTasks().length,
      () => this.derived.barrier(),
      slots,
      options,
      fail,
    );
  }

  /** Starts the owner's timers: lease renewal, time-based checkpoints, expiry, idle windows. */
  startTimers(onTick: () => void): void {
    const period = Math.max(50, Math.min(this.deps.options.ownerLeaseMs / 3, this.deps.options.checkpointMs));
    this.timer = setInterval(onTick, period);
    this.timer.unref();
  }

  /** One period of the owner's housekeeping; `renew` when the lease needs it. */
  async tick(renew: boolean): Promise<void> {
    this.state.dropExpired();
    this.parked.refill();
    this.checkpointer.tick();
    if (renew) {
      await this.lease.renew();
      await this.log.keepFence((this.deps.options.retentionSeconds * 1000) / 2);
    }
  }

  /** Drops everything in memory after a failure; the next call acquires the queue afresh. */
  abandon(reason: string): void {
    if (this.dropped) return;
    this.dropped = true;
    clearInterval(this.timer);
    this.lease.markLost(reason);
    const lost = new OwnershipLostError(this.key.id, reason);
    this.log.fail(lost);
    this.state.close(lost);
  }

  /** Flushes, writes a final checkpoint (so the next owner replays nothing) and gives the queue up. */
  async release(): Promise<void> {
    if (this.dropped) return;
    this.dropped = true;
    clearInterval(this.timer);
    this.state.close(new OwnershipLostError(this.key.id, "released"));
    await this.log.drain();
    await this.checkpointer.now();
    // From here on a commit needs a fence read started after its write (none is left to commit):
    // the released row tells the next owner there is no fence lease to wait out.
    this.log.endLease();
    try {
      await this.lease.release();
    } finally {
      this.log.fail(new OwnershipLostError(this.key.id, "released"));
    }
  }

  get isDropped(): boolean {
    return this.dropped;
  }
}
