/**
 * QueueWorker: processes the tasks of one queue inside a Moleculer broker, through `broker.call`
 * to the queue service (fetchTask with a long poll, update heartbeats, ackTask, release).
 *
 *   const worker = new QueueWorker(broker, { serviceId, concurrency: 8, meta: { ownerId } }, async (value, task) => {
 *     await resize(value, { signal: task.signal });
 *     return { done: true };
 *   });
 *   worker.on("failed", (task, err) => broker.logger.warn(`task ${task.id} failed`, err));
 *   // ... on shutdown:
 *   await worker.close();
 */
import { randomBytes } from "node:crypto";
import type { CallingOptions, ServiceBroker } from "moleculer";
import { PullWorker, type TaskHandler } from "./pull-worker";
import { WorkerStoppedError } from "./worker-errors";
import type { DeliveredTask, FailureKind, LeaseOutcome, TaskTransport } from "./task-transport";
import type { WorkerOptions } from "./worker-options";

export interface QueueWorkerOptions extends WorkerOptions {
  /**
   * Meta of every queue call: it names the owner of the queue, e.g. `{ ownerId: "tenant-1" }`
   * (the queue reads `ownerId` or `acl.ownerId`).
   */
  meta?: Record<string, unknown>;
  /** @defaultValue "worker.queue" */
  queueService?: string;
}

/** What QueueWorker needs of a broker. */
export type QueueWorkerBroker = Pick<ServiceBroker, "call" | "nodeID" | "getLogger">;

export class QueueWorker<TValue = any, TResult = unknown> extends PullWorker<TValue, TResult> {
  constructor(broker: QueueWorkerBroker, options: QueueWorkerOptions, handler: TaskHandler<TValue, TResult>) {
    super(new BrokerTaskTransport(broker, options), options, handler, {
      workerId: `${broker.nodeID.slice(0, 128)}-${randomBytes(3).toString("hex")}`,
      logger: broker.getLogger("queue-worker", { svc: options.queueService ?? "worker.queue" }),
    });
  }
}

interface FetchTaskAnswer {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled?: boolean;
  value: unknown;
}

type QueueOutcome = { ok: true; leaseUntil?: number; cancelled?: boolean } | { ok: false; reason?: string };

/** fetchTask's answer as a worker takes it. */
function deliveredOf(task: FetchTaskAnswer): DeliveredTask {
  return { ...task, cancelled: task.cancelled === true };
}

class BrokerTaskTransport implements TaskTransport {
  private readonly queue: string;
  private readonly serviceId: string;
  private readonly meta: Record<string, unknown>;
  private readonly callTimeout: number;

  constructor(
    private readonly broker: QueueWorkerBroker,
    options: QueueWorkerOptions,
  ) {
    this.queue = options.queueService ?? "worker.queue";
    this.serviceId = options.serviceId;
    this.meta = options.meta ?? {};
    this.callTimeout = options.callTimeout ?? 10_000;
  }

  private call<T>(action: string, params: object, timeout = this.callTimeout): Promise<T> {
    // A fresh meta object per call: middlewares may write to ctx.meta.
    const opts: CallingOptions = { meta: { ...this.meta }, timeout };
    return this.broker.call(`${this.queue}.${action}`, { serviceId: this.serviceId, ...params }, opts) as Promise<T>;
  }

  async fetch(workerId: string, timeToRecover: number, wait: number): Promise<DeliveredTask | null> {
    const task = await this.call<FetchTaskAnswer | null>(
      "fetchTask",
      { workerId, timeToRecover, wait },
      wait * 1000 + this.callTimeout,
    );
    return task ? deliveredOf(task) : null;
  }

  async ack(workerId: string, taskId: string, result: unknown): Promise<LeaseOutcome> {
    return leaseOutcome(await this.call<QueueOutcome>("ackTask", { workerId, taskId, result }));
  }

  async ackThenFetch(
    workerId: string,
    taskId: string,
    result: unknown,
    timeToRecover: number,
  ): Promise<{ outcome: LeaseOutcome; next?: DeliveredTask | null }> {
    const answer = await this.call<QueueOutcome & { next?: FetchTaskAnswer | null }>("ackTask", {
      workerId,
      taskId,
      result,
      next: true,
      timeToRecover,
    });
    // next: null when none was ready, undefined when the queue did not look (an older version).
    return { outcome: leaseOutcome(answer), next: answer.next ? deliveredOf(answer.next) : answer.next };
  }

  async update(workerId: string, taskId: string, progress?: unknown): Promise<LeaseOutcome> {
    const params = progress === undefined ? { workerId, taskId } : { workerId, taskId, progress };
    return leaseOutcome(await this.call<QueueOutcome>("update", params));
  }

  async release(workerId: string, taskId: string, delay: number, error?: unknown): Promise<boolean> {
    const params = error === undefined ? { workerId, taskId, delay } : { workerId, taskId, delay, error };
    return (await this.call<boolean>("release", params)) === true;
  }

  /** Retryable Moleculer errors (timeouts, no node, ownership moving, storage) are transient; 4xx are not. */
  classify(err: unknown): FailureKind {
    const { retryable, code } = (err ?? {}) as { retryable?: unknown; code?: unknown };
    if (retryable === true) return "transient";
    if (code === 401 || code === 403) return "denied";
    if (typeof code === "number" && code >= 400 && code < 500) return "rejected";
    return "transient";
  }

  explainStop(err: unknown): Error {
    const { type, message, code } = (err ?? {}) as { type?: unknown; message?: unknown; code?: unknown };
    const what = `${String(code ?? "")} ${String(type ?? "ERROR")}: ${String(message ?? err)}`.trim();
    const hint =
      code === 401 || code === 403
        ? "give the worker `meta` with the queue's owner (e.g. { ownerId }) that the ACL allows"
        : "check the worker's options";
    return new WorkerStoppedError(
      `${this.queue} refused the worker on queue ${this.serviceId} (${what}); the worker stopped: ${hint}`,
      typeof type === "string" ? type : "ERROR",
      typeof code === "number" ? code : undefined,
      err,
    );
  }
}

function leaseOutcome(outcome: QueueOutcome): LeaseOutcome {
  if (outcome.ok) return { ok: true, leaseUntil: outcome.leaseUntil, cancelled: outcome.cancelled === true };
  return { ok: false, reason: outcome.reason === "LEASE_LOST" ? "LEASE_LOST" : "NO_TASK" };
}
