/**
 * A history checker for the queue's guarantees. Record every add, delivery and ack (with task id,
 * attempt and lease deadline), then classify each task: delivered once, redelivered after its lease
 * expired, lost, duplicated while leased, or delivered again after a successful ack.
 */
import type { PullWorker } from "../../lib/worker/pull-worker";

export interface Delivery {
  worker: string;
  taskId: string;
  attempt: number;
  leaseUntil: number;
  timeToRecoverMs: number;
  at: number;
}

export interface Verdict {
  tasks: number;
  deliveredOnce: number;
  redeliveredAfterExpiry: number;
  lost: string[];
  duplicatedWhileLeased: string[];
  deliveredAfterAck: string[];
  completedTwice: string[];
}

export class History {
  private readonly added = new Set<string>();
  private readonly deliveries = new Map<string, Delivery[]>();
  private readonly acks = new Map<string, { worker: string; at: number }[]>();
  /** When a worker gave an attempt back (release), by `taskId attempt`: its lease ended then. */
  private readonly releases = new Map<string, number>();

  add(taskId: string): void {
    this.added.add(taskId);
  }

  deliver(d: Delivery): void {
    const list = this.deliveries.get(d.taskId) ?? [];
    list.push(d);
    this.deliveries.set(d.taskId, list);
  }

  ack(taskId: string, worker: string): void {
    const list = this.acks.get(taskId) ?? [];
    list.push({ worker, at: Date.now() });
    this.acks.set(taskId, list);
  }

  /** The worker gave attempt `attempt` of the task back (release): its lease ended at `at`. */
  release(taskId: string, attempt: number, at = Date.now()): void {
    this.releases.set(`${taskId} ${attempt}`, at);
  }

  verdict(): Verdict {
    const v: Verdict = {
      tasks: this.added.size,
      deliveredOnce: 0,
      redeliveredAfterExpiry: 0,
      lost: [],
      duplicatedWhileLeased: [],
      deliveredAfterAck: [],
      completedTwice: [],
    };
    for (const id of this.added) {
      const acks = this.acks.get(id) ?? [];
      if (acks.length === 0) v.lost.push(id);
      if (acks.length > 1) v.completedTwice.push(id);
      // One entry per (attempt): a re-fetch by the same worker repeats the same attempt.
      const byAttempt = new Map<number, Delivery>();
      let duplicated = false;
      for (const d of this.deliveries.get(id) ?? []) {
        const seen = byAttempt.get(d.attempt);
        if (seen && seen.worker !== d.worker) duplicated = true;
        if (!seen) byAttempt.set(d.attempt, d);
      }
      const attempts = [...byAttempt.values()].sort((a, b) => a.attempt - b.attempt);
      for (let i = 1; i < attempts.length; i++) {
        const prev = attempts[i - 1]!;
        const next = attempts[i]!;
        const claimedAt = next.leaseUntil - next.timeToRecoverMs;
        const prevEnd = Math.min(prev.leaseUntil, this.releases.get(`${id} ${prev.attempt}`) ?? Infinity);
        // A new holder before the previous lease ran out, unless the previous holder was the same worker.
        if (next.worker !== prev.worker && claimedAt < prevEnd) duplicated = true;
      }
      if (duplicated) v.duplicatedWhileLeased.push(id);
      const firstAck = acks.length > 0 ? Math.min(...acks.map(a => a.at)) : Infinity;
      if (attempts.some(d => d.at > firstAck && d.leaseUntil - d.timeToRecoverMs > firstAck))
        v.deliveredAfterAck.push(id);
      if (attempts.length === 1 && acks.length === 1) v.deliveredOnce++;
      else if (attempts.length > 1 && !duplicated) v.redeliveredAfterExpiry++;
    }
    return v;
  }
}

/** Records a QueueWorker's or HttpQueueWorker's deliveries, acks and releases into `history`. */
export function recordWorker(worker: PullWorker, history: History, timeToRecoverSeconds: number): void {
  worker.on("active", task =>
    history.deliver({
      worker: task.workerId,
      taskId: task.id,
      attempt: task.attempt,
      leaseUntil: task.leaseUntil,
      timeToRecoverMs: timeToRecoverSeconds * 1000,
      at: Date.now(),
    }),
  );
  worker.on("completed", task => history.ack(task.id, task.workerId));
  // A failed task was given back (released) before the event: its lease has ended.
  worker.on("failed", task => history.release(task.id, task.attempt));
}
