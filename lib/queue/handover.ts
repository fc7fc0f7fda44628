/**
 * The workflow hand-over: once a task with a token has ended (acked, or cancelled), its outcome is
 * given to `<activity>.completed` and, once accepted, a `handed` event ends the task. A failed call
 * is retried with backoff for as long as this node owns the queue; a new owner starts again from
 * its checkpoint (G5: at least once, `queueTaskId` lets the activity drop a repeat).
 */
import type { ValueCodec } from "../codec";
import { OwnershipLostError } from "../errors";
import type { OwnedQueue } from "./owned-queue";
import type { QueueKey } from "./queue-key";
import type { Task } from "./task";
import { openField, sealContext } from "./wire";

export interface HandoverTarget {
  completeWorkflow(input: {
    ownerId: string;
    taskId: string;
    token: unknown;
    result: unknown;
    error: unknown;
    meta: unknown;
  }): Promise<void>;
  logger: { warn(...a: unknown[]): void };
}

export interface HandoverOptions {
  handoverRetryMs: number;
  handoverMaxDelayMs: number;
}

const unjson = (b: Buffer): unknown => JSON.parse(b.toString("utf8"));

export class Handover {
  constructor(
    private readonly codec: ValueCodec,
    private readonly target: HandoverTarget,
    private readonly options: HandoverOptions,
    /** The queue as this node owns it now, if it still does. */
    private readonly owned: (key: QueueKey) => OwnedQueue | undefined,
  ) {}

  schedule(key: QueueKey, task: Task, attempt = 0): void {
    const delay =
      attempt === 0 ? 0 : Math.min(this.options.handoverMaxDelayMs, this.options.handoverRetryMs * 2 ** (attempt - 1));
    const timer = setTimeout(() => void this.run(key, task, attempt), delay);
    timer.unref();
  }

  private async run(key: QueueKey, task: Task, attempt: number): Promise<void> {
    const owned = this.owned(key);
    if (!owned || owned.state.inFlightTask(task.id) !== task) return; // the next owner hands it over
    try {
      const { token, result } = await owned.state.handoverData(task);
      if (!token || !result) throw new Error("the task's token or outcome could not be read back");
      const plainToken = unjson(await this.codec.open(sealContext(key, task.id, "token"), token));
      const outcome = unjson(await openField((c, s) => this.codec.open(c, s), key, task.id, "result", result)) as {
        result?: unknown;
        error?: unknown;
        meta?: unknown;
      } | null;
      await this.target.completeWorkflow({
        ownerId: key.ownerId,
        taskId: task.id,
        token: plainToken,
        result: outcome?.result,
        error: outcome?.error,
        meta: outcome?.meta,
      });
      await owned.state.handed(task);
    } catch (err) {
      if (err instanceof OwnershipLostError || this.owned(key) !== owned) return;
      this.target.logger.warn(
        `Hand-over of task ${task.id} in ${key.id} failed (attempt ${attempt + 1}), will retry: ${(err as Error).message}`,
      );
      this.schedule(key, task, attempt + 1);
    }
  }
}
