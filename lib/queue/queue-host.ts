/**
 * The queues this node owns: acquiring them (one takeover at a time per queue), running requests
 * on them, their timers (lease renewal, checkpoints, idle release), giving them up (on stop, on
 * idle, when placement moves them) and dropping them when a write fails.
 */
import type { ValueCodec } from "../codec";
import { Handover, type HandoverTarget } from "./handover";
import type { Membership } from "./membership";
import type { QueueEngineOptions } from "./options";
import type { OwnedQueue } from "./owned-queue";
import { queueToShed } from "./placement";
import type { QueueKey } from "./queue-key";
import type { StateHooks } from "./queue-state";
import { deadTasks, inspectTask, listTasks, queueStats, statusWithProgress } from "./queue-views";
import type { QueueStore } from "./store";
import { takeOver } from "./takeover";
import type { Task, TaskEventType } from "./task";
import type { QueueRequest } from "./wire";

/** A notification about a task: metadata only, never its value. */
export interface TaskEvent {
  type: TaskEventType;
  ownerId: string;
  serviceId: string;
  taskId: string;
  attempt: number;
  [extra: string]: unknown;
}

export interface HostDeps {
  store: QueueStore;
  options: QueueEngineOptions;
  nodeId: string;
  membership: Membership;
  codec: ValueCodec;
  handover: HandoverTarget;
  publish(event: TaskEvent): void;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; debug(...a: unknown[]): void };
}

export class QueueHost {
  private readonly owned = new Map<string, { queue: OwnedQueue; renewedAt: number; acquiredAt: number }>();
  private readonly acquiring = new Map<string, Promise<OwnedQueue | { owner: string }>>();
  /** Queues being given up: this node must not take them straight back (placement decides where they go). */
  private readonly releasing = new Map<string, Promise<void>>();
  private readonly handover: Handover;
  private rebalanceTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly deps: HostDeps) {
    this.handover = new Handover(deps.codec, deps.handover, deps.options, key => this.owned.get(key.id)?.queue);
  }

  start(): void {
    this.rebalanceTimer = setInterval(() => void this.rebalance(), 1000);
    this.rebalanceTimer.unref();
  }

  /** Hands every owned queue over (flushing and checkpointing first) so other nodes can take them at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.rebalanceTimer);
    await Promise.allSettled([...this.owned.values()].map(o => this.release(o.queue.key)));
  }

  get(key: QueueKey): OwnedQueue | undefined {
    return this.owned.get(key.id)?.queue;
  }

  keys(): QueueKey[] {
    return [...this.owned.values()].map(o => o.queue.key);
  }

  get size(): number {
    return this.owned.size;
  }

  /** Takes the queue over unless another live node owns it (then says which). One takeover at a time per queue. */
  acquire(key: QueueKey): Promise<OwnedQueue | { owner: string }> {
    const existing = this.owned.get(key.id);
    if (existing) return Promise.resolve(existing.queue);
    let pending = this.acquiring.get(key.id);
    if (!pending) {
      pending = this.doAcquire(key).finally(() => this.acquiring.delete(key.id));
      this.acquiring.set(key.id, pending);
    }
    return pending;
  }

  private async doAcquire(key: QueueKey): Promise<OwnedQueue | { owner: string }> {
    if (this.stopped) return { owner: "" };
    const releasing = this.releasing.get(key.id);
    if (releasing) {
      await releasing;
      return { owner: "" };
    }
    const t0 = performance.now();
    const result = await takeOver(key, {
      store: this.deps.store,
      options: this.deps.options,
      nodeId: this.deps.nodeId,
      isNodeAlive: id => this.deps.membership.isAlive(id),
      hooks: k => this.hooksFor(k),
      onFailure: (k, reason) => this.abandon(k, reason),
      warn: m => this.deps.logger.warn(m),
    });
    if ("owner" in result) return result;
    const queue = result.owned;
    if (this.stopped) {
      await queue.release().catch(() => undefined);
      return { owner: "" };
    }
    this.owned.set(key.id, { queue, renewedAt: Date.now(), acquiredAt: Date.now() });
    queue.startTimers(() => void this.tick(key));
    this.deps.logger.info(
      `Queue ${key.id} taken over by ${this.deps.nodeId} (range ${queue.lease.rangeId}, ${queue.takeover.events} events ` +
        `replayed, ${queue.takeover.derived} derived rows rewritten, ${Math.round(performance.now() - t0)} ms)`,
    );
    for (const t of queue.state.pendingHandovers()) this.handover.schedule(key, t);
    return queue;
  }

  private hooksFor(key: QueueKey): StateHooks {
    return {
      handover: t => this.handover.schedule(key, t),
      handoversPending: pending =>
        void this.deps.store
          .markHandovers(key.ownerId, key.serviceId, key.id, pending)
          .catch(err =>
            this.deps.logger.warn(`Recording pending hand-overs of ${key.id} failed: ${(err as Error).message}`),
          ),
      notify: (type: TaskEventType, t: Task, extra?: Record<string, unknown>) =>
        this.deps.publish({
          type,
          ownerId: key.ownerId,
          serviceId: key.serviceId,
          taskId: t.id,
          attempt: t.attempt,
          ...extra,
        }),
    };
  }

  private async tick(key: QueueKey): Promise<void> {
    const entry = this.owned.get(key.id);
    if (!entry) return;
    const { queue } = entry;
    const now = Date.now();
    if (now - queue.state.lastUsed > this.deps.options.idleReleaseMs && queue.state.pendingHandovers().length === 0) {
      await this.release(key);
      return;
    }
    const renew = now - entry.renewedAt >= this.deps.options.ownerLeaseMs / 3;
    try {
      await queue.tick(renew);
      if (renew) entry.renewedAt = now;
    } catch (err) {
      this.abandon(key, `lease renewal failed: ${(err as Error).message}`);
    }
  }

  /** Drops the queue from this node after a failed write or a lost lease; the next call re-acquires. */
  abandon(key: QueueKey, reason: string): void {
    const entry = this.owned.get(key.id);
    if (!entry) return;
    this.owned.delete(key.id);
    entry.queue.abandon(reason);
    this.deps.logger.warn(`Queue ${key.id} abandoned by ${this.deps.nodeId}: ${reason}`);
  }

  /** Gives the queue up cleanly so that the next owner replays nothing. */
  async release(key: QueueKey): Promise<void> {
    const entry = this.owned.get(key.id);
    if (!entry) return;
    this.owned.delete(key.id);
    const done = entry.queue.release().catch((err: Error) => {
      entry.queue.abandon(`release failed: ${err.message}`);
      this.deps.logger.warn(`Queue ${key.id} could not be released cleanly: ${err.message}`);
    });
    this.releasing.set(key.id, done);
    try {
      await done;
    } finally {
      this.releasing.delete(key.id);
    }
  }

  /** Placement: an owner over the cap gives queues away (two a second at most), once membership is stable. */
  private async rebalance(): Promise<void> {
    const m = this.deps.membership;
    if (this.stopped || m.stableFor() < this.deps.options.rebalanceAfterMs) return;
    // Two at most per second: the loads other nodes report are half a second old.
    for (let i = 0; i < 2; i++) {
      const mine = [...this.owned.keys()];
      // Queues taken since membership last changed go first: concurrent placements by several entry
      // nodes can overfill one node, and giving back one of those moves nothing that was settled.
      const changedAt = Date.now() - m.stableFor();
      const recent = mine.filter(q => (this.owned.get(q)?.acquiredAt ?? 0) >= changedAt);
      const shed = queueToShed(this.deps.nodeId, mine, m.live(), recent);
      const entry = shed && this.owned.get(shed);
      if (!entry) return;
      this.deps.logger.info(`Queue ${shed} given away by ${this.deps.nodeId} to balance the nodes`);
      await this.release(entry.queue.key);
    }
  }

  // ---- requests on an owned queue ----------------------------------------------------------------

  /**
   * Runs a request on a queue this node owns. It needs no caller: what it keeps comes sealed
   * (values by the entry node; outcomes, progress and errors by their LateSeal).
   */
  run(queue: OwnedQueue, r: QueueRequest): Promise<unknown> {
    // Not async: the state's own promise is returned as it is (no frame and no extra turns per call).
    try {
      return Promise.resolve(this.runOn(queue, r));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private runOn(queue: OwnedQueue, r: QueueRequest): unknown {
    const state = queue.state;
    const retentionMs = this.deps.options.retentionSeconds * 1000;
    switch (r.op) {
      case "add":
        return state
          .add({
            taskId: r.taskId,
            clientId: r.clientId,
            value: r.value,
            token: r.token,
            expiresAt: r.expiresAt,
            notBefore: r.notBefore,
            maxAttempts: r.maxAttempts,
            checkIndex: r.retry,
          })
          .then(() => true);
      case "fetch":
        return state.fetch(r.worker, r.timeToRecoverMs, r.waitMs);
      case "ack":
        return r.next
          ? state.ackThenFetch(r.worker, r.taskId, r.failed, t => r.outcome(t.id), r.next.timeToRecoverMs)
          : state.ack(r.worker, r.taskId, r.failed, t => r.outcome(t.id));
      case "update":
        return state.update(r.worker, r.taskId, r.progress === undefined ? undefined : t => r.progress!(t.id));
      case "release":
        return state.release(r.worker, r.taskId, r.delayMs, r.error === undefined ? undefined : t => r.error!(t.id));
      case "cancel":
        return state.cancel(r.taskId, t => r.outcome(t.id));
      case "dead":
        return deadTasks(state, r.limit).then(dead =>
          dead.map(d => ({
            taskId: d.taskId,
            attempt: d.attempt,
            reason: d.reason,
            error: d.error,
            expiresAt: d.expiresAt,
          })),
        );
      case "redrive":
        return state.redrive(r.taskIds);
      case "purge":
        return state.purge();
      case "status":
        return statusWithProgress(state, r.taskId);
      case "stats":
        return queueStats(state, retentionMs);
      case "tasks":
        return listTasks(state, r.state, r.offset, r.limit);
      case "inspect":
        return inspectTask(state, r.taskId);
    }
  }

  /** Ready tasks per owned queue (without reading anything), for the depth gauge. */
  depths(): { serviceId: string; ready: number }[] {
    return [...this.owned.values()].map(({ queue }) => ({
      serviceId: queue.key.serviceId,
      ready: queue.state.backlogView.count + queue.state.inFlightTasks().filter(t => t.state === "ready").length,
    }));
  }
}
