/**
 * How a worker reaches the queue: the four calls of the pull protocol (fetch, ack, update, release)
 * and how to judge a failed call. QueueWorker speaks them through `broker.call`, HttpQueueWorker
 * through the HTTP gateway; the worker loop (pull-worker.ts) does not know which.
 */

/** A task as a worker receives it. */
export interface DeliveredTask {
  taskId: string;
  /** 1 for the first delivery; every delivery counts, also one after an expired lease. */
  attempt: number;
  /** End of the lease, ms since the epoch. */
  leaseUntil: number;
  /** The task was cancelled while this worker held it: it should be given back, not run. */
  cancelled: boolean;
  value: unknown;
}

/** What ack and update answer: the worker holds the task, or why it does not. */
export type LeaseOutcome =
  { ok: true; leaseUntil?: number; cancelled?: boolean } | { ok: false; reason: "NO_TASK" | "LEASE_LOST" };

/**
 * What to do about a failed call:
 * - `transient`: the same call may succeed later (network, 5xx, retryable Moleculer errors): retry with backoff;
 * - `denied`: the worker's credentials or owner are refused (401, 403): retrying cannot help, stop the worker;
 * - `rejected`: this request is wrong (4xx: validation, too large): retrying it cannot help.
 */
export type FailureKind = "transient" | "denied" | "rejected";

export interface TaskTransport {
  /** Long-polls for the worker's next task (or the one it holds) for up to `waitSeconds`. */
  fetch(workerId: string, timeToRecoverSeconds: number, waitSeconds: number): Promise<DeliveredTask | null>;
  /** Completes the task with the handler's result. */
  ack(workerId: string, taskId: string, result: unknown): Promise<LeaseOutcome>;
  /**
   * Completes the task and takes the worker's next one in the same call (no long poll). `next` is
   * that task, null when none was ready, undefined when the queue did not look (an older version).
   * Optional: a worker whose transport lacks it acks, then fetches.
   */
  ackThenFetch?(
    workerId: string,
    taskId: string,
    result: unknown,
    timeToRecoverSeconds: number,
  ): Promise<{ outcome: LeaseOutcome; next?: DeliveredTask | null }>;
  /** Heartbeat (extends the lease by the fetch's timeToRecover), optionally with progress. */
  update(workerId: string, taskId: string, progress?: unknown): Promise<LeaseOutcome>;
  /** Gives the task back after `delaySeconds`, with the error that made it fail; false when the worker no longer holds it. */
  release(workerId: string, taskId: string, delaySeconds: number, error?: unknown): Promise<boolean>;
  classify(err: unknown): FailureKind;
  /** An error that says, in one line, why the worker stopped (a `denied` call, or a `rejected` fetch) and what to do. */
  explainStop(err: unknown): Error;
  /** A lower bound for the next retry that the server asked for (HTTP Retry-After), in ms. */
  retryAfterMs?(err: unknown): number | undefined;
}
