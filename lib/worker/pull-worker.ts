/**
 * The worker loop shared by QueueWorker and HttpQueueWorker: `concurrency` slots, each long-polling
 * for a task under its own worker id, running the handler with heartbeats, then acking the result
 * or releasing the task with the handler's error. close() stops fetching, waits for running
 * handlers up to a timeout and gives back the tasks they did not finish.
 *
 * Every `active` event is followed by exactly one `completed` or `failed` event for that task.
 */
import { EventEmitter } from "node:events";
import { Backoff, pause } from "./backoff";
import { TaskAbortedError, type TaskAbortReason } from "./worker-errors";
import type { DeliveredTask, FailureKind, LeaseOutcome, TaskTransport } from "./task-transport";
import type { WorkerLogger, WorkerOptions } from "./worker-options";

/** The task as its handler sees it (`TValue`: the type of the values added to the queue). */
export interface WorkerTask<TValue = unknown> {
  readonly id: string;
  /** 1 on the first delivery. */
  readonly attempt: number;
  readonly serviceId: string;
  /** The slot's worker id that holds the task. */
  readonly workerId: string;
  readonly value: TValue;
  /** End of the lease (ms since the epoch), moved on by each heartbeat. */
  readonly leaseUntil: number;
  /**
   * Aborts when the handler should stop: the task was cancelled, the lease was lost, or close()
   * timed out. `signal.reason` is a TaskAbortedError saying which.
   */
  readonly signal: AbortSignal;
  /** Reports progress (and extends the lease). Never throws: a failed report is an `error` event. */
  progress(progress: unknown): Promise<void>;
}

/**
 * Does the work of one task; its result acks the task, a throw releases it for another attempt.
 * `TValue` is what the queue's producers add (the queue does not check it), `TResult` what the
 * handler returns (the ack's result).
 */
export type TaskHandler<TValue = any, TResult = unknown> = (
  value: TValue,
  task: WorkerTask<TValue>,
) => TResult | Promise<TResult>;

export interface WorkerEvents<TValue = any, TResult = unknown> {
  /** A task was delivered and its handler starts. */
  active: [task: WorkerTask<TValue>];
  /** The handler's result was acked. */
  completed: [task: WorkerTask<TValue>, result: TResult];
  /** The handler threw (the task was released), or the task was lost or given back (a TaskAbortedError). */
  failed: [task: WorkerTask<TValue>, error: unknown];
  /** A call to the queue failed; transient ones are retried. An error that stops the worker comes once. */
  error: [error: Error];
  /** close() has finished. */
  closed: [];
}

type SlotState = "idle" | "fetching" | "running" | "settling" | "stopped";

interface Slot {
  workerId: string;
  state: SlotState;
  loop?: Promise<void>;
  current?: RunningTask;
  /** The task the last ack took for this slot (ackThenFetch): run next, without a fetch. */
  next?: DeliveredTask;
}

class RunningTask implements WorkerTask<any> {
  readonly id: string;
  readonly attempt: number;
  // The handler's TValue: the queue does not check what producers add.
  readonly value: any;
  leaseUntil: number;
  readonly controller = new AbortController();
  /** The worker no longer holds the task (update or ack said so): its result must not be reported. */
  lost = false;
  /** close() gave the task back while the handler ran. */
  abandoned = false;
  /** The handler returned or threw; heartbeats stop. */
  finished = false;
  heartbeatTimer?: NodeJS.Timeout;
  heartbeatInFlight?: Promise<void>;

  constructor(
    readonly serviceId: string,
    readonly workerId: string,
    delivered: DeliveredTask,
    private readonly sendUpdate: (task: RunningTask, progress?: unknown) => Promise<void>,
  ) {
    this.id = delivered.taskId;
    this.attempt = delivered.attempt;
    this.value = delivered.value;
    this.leaseUntil = delivered.leaseUntil;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  progress(progress: unknown): Promise<void> {
    return this.sendUpdate(this, progress);
  }

  abort(reason: TaskAbortReason): void {
    if (!this.controller.signal.aborted) {
      this.controller.abort(new TaskAbortedError(reason, this.id, this.workerId));
    }
  }
}

/** A failed call after its retries: what kind of failure, and the error. */
interface CallFailure {
  failure: FailureKind;
  error: unknown;
}

export class PullWorker<TValue = any, TResult = unknown> extends EventEmitter<WorkerEvents<TValue, TResult>> {
  readonly serviceId: string;
  readonly workerId: string;
  readonly concurrency: number;
  /** The error that stopped the worker (a refused token or owner), if one did. */
  stoppedBy?: Error;

  private readonly timeToRecover: number;
  private readonly wait: number;
  private readonly heartbeatMs: number;
  private readonly closeTimeout: number;
  private readonly retryDelay: NonNullable<WorkerOptions["retryDelay"]>;
  private readonly backoffMin: number;
  private readonly backoffMax: number;
  private readonly logger: WorkerLogger;
  private readonly slots: Slot[];
  /** Aborted by close(): ends idle pauses and retry pauses of fetches. */
  private readonly stopping = new AbortController();
  private closing = false;
  private running?: Promise<void>;
  private closed?: Promise<void>;

  protected constructor(
    private readonly transport: TaskTransport,
    options: WorkerOptions,
    private readonly handler: TaskHandler<TValue, TResult>,
    defaults: { workerId: string; logger: WorkerLogger },
  ) {
    super();
    this.serviceId = options.serviceId;
    this.workerId = options.workerId ?? defaults.workerId;
    this.concurrency = options.concurrency ?? 1;
    this.timeToRecover = options.timeToRecover ?? 60;
    this.wait = options.wait ?? 5;
    const fraction = options.heartbeatFraction ?? 1 / 3;
    this.closeTimeout = options.closeTimeout ?? 30_000;
    this.retryDelay = options.retryDelay ?? 0;
    this.backoffMin = options.backoff?.minMs ?? 200;
    this.backoffMax = Math.max(this.backoffMin, options.backoff?.maxMs ?? 5000);
    this.logger = options.logger ?? defaults.logger;
    checkOptions(this.serviceId, this.workerId, this.concurrency, this.timeToRecover, this.wait, fraction);
    this.heartbeatMs = Math.max(20, this.timeToRecover * 1000 * fraction);
    this.slots = Array.from({ length: this.concurrency }, (_, i) => ({
      workerId: this.concurrency === 1 ? this.workerId : `${this.workerId}-${i}`,
      state: "idle" as SlotState,
    }));
    // On the next microtask, so that listeners attached right after `new` see every event.
    if (options.autorun ?? true) queueMicrotask(() => void this.run());
  }

  /** Starts the slots (once); resolves when every slot has stopped, after close() or an error that stops the worker. */
  run(): Promise<void> {
    if (this.closing) return this.running ?? Promise.resolve();
    this.running ??= Promise.all(this.slots.map(slot => (slot.loop = this.slotLoop(slot)))).then(() => undefined);
    return this.running;
  }

  /** Handlers running now. */
  get activeCount(): number {
    return this.slots.filter(s => s.state === "running").length;
  }

  get isRunning(): boolean {
    return this.running !== undefined && !this.closing;
  }

  /**
   * Stops fetching and waits up to `timeoutMs` for the running handlers; their results are acked as
   * usual. Tasks whose handlers are still running then are given back (their signal aborts with
   * WORKER_CLOSED and their results are dropped). A long poll still in flight gives back the task
   * it brings. Resolves when that is done; calling it again returns the same promise.
   */
  close(timeoutMs = this.closeTimeout): Promise<void> {
    if (this.closed) return this.closed;
    this.closing = true;
    this.stopping.abort();
    this.closed = (async () => {
      const deadline = new AbortController();
      const loops = Promise.all(this.slots.map(s => s.loop)).then(() => false);
      const timedOut = await Promise.race([loops, pause(timeoutMs, deadline.signal).then(() => true)]);
      deadline.abort();
      if (timedOut) {
        const running = this.slots.filter(s => s.state === "running" && s.current);
        await Promise.all(running.map(s => this.abandon(s.current!)));
        // The other slots are fetching or settling: a long poll still in flight may yet bring a
        // task (one just given back above, even), which the slot gives back; wait for that, so
        // that nothing this worker took is still held when close() resolves.
        await Promise.all(this.slots.filter(s => !running.includes(s)).map(s => s.loop));
      }
      this.notify("closed");
    })();
    return this.closed;
  }

  // ---- the slot loop -----------------------------------------------------------------------------

  private async slotLoop(slot: Slot): Promise<void> {
    const failures = new Backoff(this.backoffMin, this.backoffMax);
    const idle = new Backoff(100, 2000);
    while (!this.closing) {
      slot.state = "fetching";
      const started = Date.now();
      let delivered: DeliveredTask | null = slot.next ?? null;
      slot.next = undefined;
      try {
        delivered ??= await this.transport.fetch(slot.workerId, this.timeToRecover, this.wait);
      } catch (err) {
        slot.state = "idle";
        if (this.closing) break;
        const kind = this.transport.classify(err);
        if (kind !== "transient") {
          this.stop(err);
          break;
        }
        this.reportError(err);
        await pause(Math.max(failures.next(), this.transport.retryAfterMs?.(err) ?? 0), this.stopping.signal);
        continue;
      }
      failures.reset();
      if (delivered === null) {
        slot.state = "idle";
        // An empty answer that came early (no long poll, or a gateway without it): pause, never spin.
        if (this.wait === 0 || Date.now() - started < (this.wait * 1000) / 2) {
          await pause(idle.next(), this.stopping.signal);
        }
        continue;
      }
      idle.reset();
      if (this.closing || delivered.cancelled) {
        // Not run: given back at once (a cancelled task then ends as cancelled).
        slot.state = "settling";
        await this.callWithRetries(delivered.leaseUntil, () =>
          this.transport.release(slot.workerId, delivered.taskId, 0),
        );
        continue;
      }
      await this.process(slot, delivered);
    }
    // Closing: a task the last ack took is given back at once, not left to its lease.
    const left = slot.next;
    slot.next = undefined;
    if (left) {
      slot.state = "settling";
      await this.callWithRetries(left.leaseUntil, () => this.transport.release(slot.workerId, left.taskId, 0));
    }
    slot.state = "stopped";
  }

  private async process(slot: Slot, delivered: DeliveredTask): Promise<void> {
    const task = new RunningTask(this.serviceId, slot.workerId, delivered, (t, progress) =>
      this.sendUpdate(t, progress),
    );
    slot.current = task;
    slot.state = "running";
    this.scheduleHeartbeat(task);
    this.notify("active", task);
    let outcome: { result: TResult } | { error: unknown };
    try {
      outcome = { result: await this.handler(delivered.value as TValue, task) };
    } catch (error) {
      outcome = { error };
    }
    slot.state = "settling";
    task.finished = true;
    clearTimeout(task.heartbeatTimer);
    await task.heartbeatInFlight;
    slot.current = undefined;
    if (task.abandoned) return; // close() gave it back and reported it
    if (task.lost) {
      this.notify("failed", task, new TaskAbortedError("LEASE_LOST", task.id, task.workerId));
      return;
    }
    if ("result" in outcome) await this.complete(slot, task, outcome.result);
    else await this.fail(task, outcome.error);
  }

  private async complete(slot: Slot, task: RunningTask, result: TResult): Promise<void> {
    // With a transport that can, the ack also takes the slot's next task (one call per task).
    // Decided once: a retry of a chained ack chains too, so that a task an attempt took whose
    // answer was lost comes back here (and is released by the slot when the worker is closing).
    const chained = this.closing ? undefined : this.transport.ackThenFetch?.bind(this.transport);
    const acked = await this.callWithRetries(task.leaseUntil, async () => {
      if (!chained) return this.transport.ack(task.workerId, task.id, result);
      const answer = await chained(task.workerId, task.id, result, this.timeToRecover);
      slot.next = answer.next ?? undefined;
      return answer.outcome;
    });
    if ("failure" in acked) {
      // The result itself was refused (too large, invalid): the task fails with that reason.
      if (acked.failure === "rejected") return this.fail(task, acked.error);
      this.notify("failed", task, acked.error);
      return;
    }
    if (acked.ok) this.notify("completed", task, result);
    else this.notify("failed", task, new TaskAbortedError("LEASE_LOST", task.id, task.workerId));
  }

  /** Gives the task back with its error, so that retries and the dead-letter list apply. */
  private async fail(task: RunningTask, error: unknown): Promise<void> {
    let delay = 0;
    try {
      delay = typeof this.retryDelay === "function" ? this.retryDelay(task.attempt, error) : this.retryDelay;
    } catch (err) {
      this.reportError(new Error(`retryDelay threw (${(err as Error)?.message ?? err}); the task goes back at once`));
    }
    const release = (details: unknown) => () => this.transport.release(task.workerId, task.id, delay, details);
    const released = await this.callWithRetries(task.leaseUntil, release(serializeError(error)));
    // An error too large (or otherwise refused) must not keep the task from going back.
    if (typeof released === "object" && released.failure === "rejected") {
      await this.callWithRetries(task.leaseUntil, release({ message: "(the error could not be stored)" }));
    }
    this.notify("failed", task, error);
  }

  /** close() timed out while the handler ran: abort it, give the task back, report it as failed. */
  private async abandon(task: RunningTask): Promise<void> {
    task.abandoned = true;
    clearTimeout(task.heartbeatTimer);
    task.abort("WORKER_CLOSED");
    const reason = task.signal.reason as TaskAbortedError;
    await this.callWithRetries(task.leaseUntil, () =>
      this.transport.release(task.workerId, task.id, 0, serializeError(reason)),
    );
    this.notify("failed", task, reason);
  }

  // ---- heartbeats --------------------------------------------------------------------------------

  private scheduleHeartbeat(task: RunningTask): void {
    task.heartbeatTimer = setTimeout(() => {
      if (task.finished || task.abandoned) return;
      task.heartbeatInFlight = this.sendUpdate(task).then(() => {
        if (!task.finished && !task.abandoned) this.scheduleHeartbeat(task);
      });
    }, this.heartbeatMs);
  }

  /** One `update`: extends the lease; a cancellation or a lost lease aborts the handler's signal. */
  private async sendUpdate(task: RunningTask, progress?: unknown): Promise<void> {
    let outcome: LeaseOutcome;
    try {
      outcome = await this.transport.update(task.workerId, task.id, progress);
    } catch (err) {
      if (this.transport.classify(err) === "denied") this.stop(err);
      else this.reportError(err);
      return;
    }
    if (task.abandoned) return;
    if (outcome.ok) {
      if (outcome.leaseUntil !== undefined) task.leaseUntil = outcome.leaseUntil;
      if (outcome.cancelled) task.abort("TASK_CANCELLED");
    } else if (!task.finished) {
      task.lost = true;
      task.abort("LEASE_LOST");
    }
  }

  // ---- failures ----------------------------------------------------------------------------------

  /**
   * A call about a held task, retried through transient failures while the lease lasts (after it,
   * another worker may have the task anyway). Retry pauses are not cut short by close(), which waits
   * for these calls.
   */
  private async callWithRetries<T>(leaseUntil: number, call: () => Promise<T>): Promise<T | CallFailure> {
    const backoff = new Backoff(this.backoffMin, this.backoffMax);
    for (;;) {
      try {
        return await call();
      } catch (error) {
        const failure = this.transport.classify(error);
        if (failure === "denied") {
          this.stop(error);
          return { failure, error };
        }
        this.reportError(error);
        if (failure === "rejected") return { failure, error };
        const delay = Math.max(backoff.next(), this.transport.retryAfterMs?.(error) ?? 0);
        if (Date.now() + delay >= leaseUntil) return { failure, error };
        await pause(delay);
      }
    }
  }

  /** Stops the worker for an error that retrying cannot fix; reported once, however many slots hit it. */
  private stop(err: unknown): void {
    if (this.stoppedBy) return;
    this.stoppedBy = this.transport.explainStop(err);
    this.reportError(this.stoppedBy);
    void this.close();
  }

  /** Emits an event; a listener that throws is reported, and does not break the slot's loop. */
  private notify<E extends "active" | "completed" | "failed" | "closed">(event: E, ...args: WorkerEvents[E]): void {
    try {
      (this.emit as (name: string, ...values: unknown[]) => boolean).call(this, event, ...args);
    } catch (err) {
      this.reportError(new Error(`A listener of the ${event} event threw: ${(err as Error)?.message ?? err}`));
    }
  }

  /** An `error` event, or the logger when nobody listens (an unheard `error` event would throw). */
  private reportError(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    try {
      if (this.listenerCount("error") > 0) {
        this.emit("error", error);
        return;
      }
    } catch (listenerError) {
      this.logger.error(`Queue worker ${this.workerId}: an error listener threw:`, listenerError);
    }
    this.logger.warn(`Queue worker ${this.workerId} (queue ${this.serviceId}): ${error.message}`);
  }
}

/** What `release` stores as the task's last error: name, message, and the code and type when there are. */
export function serializeError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { name: "Error", message: truncate(String(err)) };
  const out: Record<string, unknown> = { name: err.name, message: truncate(err.message) };
  const { code, type } = err as { code?: unknown; type?: unknown };
  if (typeof code === "string" || typeof code === "number") out.code = code;
  if (typeof type === "string") out.type = type;
  return out;
}

function truncate(text: string, max = 2000): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function checkOptions(
  serviceId: string,
  workerId: string,
  concurrency: number,
  timeToRecover: number,
  wait: number,
  heartbeatFraction: number,
): void {
  const fail = (what: string) => {
    throw new TypeError(`Queue worker option ${what}`);
  };
  if (typeof serviceId !== "string" || serviceId === "") fail("serviceId is required: the queue's uuid");
  if (typeof workerId !== "string" || workerId === "" || workerId.length > 240)
    fail("workerId must be 1-240 characters");
  if (!Number.isInteger(concurrency) || concurrency < 1)
    fail(`concurrency must be a whole number >= 1, not ${concurrency}`);
  if (!(timeToRecover > 0)) fail(`timeToRecover must be a number of seconds > 0, not ${timeToRecover}`);
  if (!(wait >= 0 && wait <= 20)) fail(`wait must be 0-20 seconds, not ${wait}`);
  if (!(heartbeatFraction > 0 && heartbeatFraction < 1)) {
    fail(`heartbeatFraction must be between 0 and 1 (exclusive), not ${heartbeatFraction}`);
  }
}
