/**
 * The workers' own errors: why a handler's task was taken away, and why a worker stopped. Plain
 * Errors (no Moleculer import), so that the HTTP worker runs in processes without Moleculer.
 */

export type TaskAbortReason =
  /** The task was cancelled (the `cancel` action); the worker gives it back, which ends it as cancelled. */
  | "TASK_CANCELLED"
  /** The worker's lease ran out (heartbeats failed for longer than timeToRecover); another worker may have the task. */
  | "LEASE_LOST"
  /** close() timed out before the handler finished; the task was given back for another attempt. */
  | "WORKER_CLOSED";

const messages: Record<TaskAbortReason, string> = {
  TASK_CANCELLED: "The task was cancelled",
  LEASE_LOST: "The worker's lease on the task was lost: another worker may have it now; do not report its result",
  WORKER_CLOSED: "The worker closed before the task finished: the task was given back to the queue",
};

/** The reason of `task.signal` when it aborts, and the error of the `failed` event when the worker lost the task. */
export class TaskAbortedError extends Error {
  override name = "TaskAbortedError";

  constructor(
    readonly type: TaskAbortReason,
    readonly taskId: string,
    readonly workerId: string,
  ) {
    super(messages[type]);
  }
}

/**
 * The worker stopped because the queue refused it in a way no retry can fix (a wrong token, an
 * owner the ACL refuses, an invalid option): emitted once as an `error` event, kept in `worker.stoppedBy`.
 */
export class WorkerStoppedError extends Error {
  override name = "WorkerStoppedError";

  constructor(
    message: string,
    /** The refusal's type, e.g. INVALID_TOKEN, SERVICE_NOT_ALLOWED, OWNER_MISSING, VALIDATION_ERROR. */
    readonly type: string,
    /** The refusal's status: the HTTP status, or the Moleculer error's code. */
    readonly code: number | undefined,
    cause: unknown,
  ) {
    super(message, { cause });
  }
}
