/**
 * Read-only views of a queue: a task's status, the queue's stats, task listings and a task's
 * details. They read the owner's memory first, then task_index, the log and the parked tables;
 * they never change anything.
 */
import type { Sealed } from "../codec";
import type { ParkedTask, PublicState, QueueStats, Task, TaskStatus } from "./task";
import type { QueueState } from "./queue-state";

/** What a listing shows of an in-flight task. */
function inFlightStatus(t: Task, now: number): TaskStatus {
  const leaseExpired = t.state === "leased" && (t.leaseUntil ?? 0) <= now;
  const state: PublicState = t.state === "ready" || leaseExpired ? "waiting" : (t.state as PublicState);
  return {
    taskId: t.id,
    state,
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    worker: t.state === "leased" ? t.worker : undefined,
    leaseUntil: t.state === "leased" ? t.leaseUntil : undefined,
    cancelled: t.cancelled,
    reason: t.reason,
    expiresAt: t.expiresAt,
  };
}

function waitingStatus(t: Pick<Task, "id" | "attempt" | "maxAttempts" | "expiresAt">): TaskStatus {
  return {
    taskId: t.id,
    state: "waiting",
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    cancelled: false,
    expiresAt: t.expiresAt,
  };
}

function parkedStatus(r: ParkedTask, state: "delayed" | "dead"): TaskStatus {
  return {
    taskId: r.taskId,
    state,
    attempt: r.attempt,
    maxAttempts: r.maxAttempts,
    notBefore: state === "delayed" ? r.dueAt : undefined,
    cancelled: false,
    reason: r.reason,
    expiresAt: r.expiresAt,
  };
}

/** Where a task is and what it holds (sealed), for status and inspect. */
type Located =
  | { at: "inflight"; task: Task }
  | { at: "window"; task: Task }
  | { at: "backlog"; pos: number }
  | { at: "due" | "dead"; row: ParkedTask }
  | { at: "ended"; state: PublicState };

async function locate(q: QueueState, taskId: string): Promise<Located | undefined> {
  const t = q.inFlightTask(taskId);
  if (t) return { at: "inflight", task: t };
  const w = q.backlogView.find(taskId);
  if (w) return { at: "window", task: w };
  const ended = q.endedAs(taskId);
  if (ended) return { at: "ended", state: ended };
  const entry = await q.indexEntry(taskId);
  if (!entry) return undefined;
  const parked = q.parkedView;
  const hint = entry.hint;
  switch (hint.kind) {
    case "delayed": {
      const ref = { slot: hint.minute, part: hint.part, dueAt: hint.dueAt, pos: hint.pos };
      if (!parked.isDueWaiting(ref)) return { at: "ended", state: endedState(q, hint.pos) };
      await parked.whenDurable("due", ref.slot, ref.part);
      const row = await q.parkedRow("due", ref.slot, ref.part, ref.dueAt, ref.pos);
      return row && !row.consumed ? { at: "due", row } : { at: "ended", state: endedState(q, hint.pos) };
    }
    case "dead": {
      if (parked.isConsumed(hint.pos)) return { at: "ended", state: endedState(q, hint.pos) };
      await parked.whenDurable("dead", hint.hour, hint.part);
      const row = await q.parkedRow("dead", hint.hour, hint.part, 0, hint.pos);
      return row && !row.consumed ? { at: "dead", row } : { at: "ended", state: "done" };
    }
    case "cancelled":
      return { at: "ended", state: "cancelled" };
    case "delivered":
      return { at: "ended", state: "done" };
    case "none":
      if (q.backlogView.isWaiting(entry.pos)) return { at: "backlog", pos: entry.pos };
      return { at: "ended", state: endedState(q, entry.pos) };
  }
}

/** A task that is nowhere any more: purged if its source came before the purge, else done. */
function endedState(q: QueueState, pos: number): PublicState {
  return pos < q.backlogView.purgeBound ? "cancelled" : "done";
}

export async function statusOf(q: QueueState, taskId: string, now = Date.now()): Promise<TaskStatus> {
  return statusOfLocated(q, taskId, await locate(q, taskId), now);
}

async function statusOfLocated(
  q: QueueState,
  taskId: string,
  found: Located | undefined,
  now: number,
): Promise<TaskStatus> {
  if (!found) return { taskId, state: "unknown" };
  switch (found.at) {
    case "inflight":
      return inFlightStatus(found.task, now);
    case "window":
      return waitingStatus(found.task);
    case "backlog": {
      const source = await q.source(found.pos);
      return source
        ? waitingStatus({
            id: taskId,
            attempt: source.attempt ?? 0,
            maxAttempts: source.maxAttempts ?? 0,
            expiresAt: source.expiresAt,
          })
        : { taskId, state: "unknown" };
    }
    case "due":
      return parkedStatus(found.row, "delayed");
    case "dead":
      return parkedStatus(found.row, "dead");
    case "ended":
      return { taskId, state: found.state };
  }
}

/** A task's status with its latest sealed progress (a running task's, or a parked one's). */
export async function statusWithProgress(
  q: QueueState,
  taskId: string,
  now = Date.now(),
): Promise<{ status: TaskStatus; progress?: Sealed }> {
  const found = await locate(q, taskId);
  const status = await statusOfLocated(q, taskId, found, now);
  if (found?.at === "inflight") return { status, progress: await q.sealedField(found.task, "progress") };
  if (found?.at === "due" || found?.at === "dead") return { status, progress: found.row.progress };
  return { status };
}

/** A task with its sealed value, progress and last error, for its owner's eyes. */
export async function inspectTask(
  q: QueueState,
  taskId: string,
  now = Date.now(),
): Promise<{ status: TaskStatus; value?: Sealed; progress?: Sealed; error?: Sealed }> {
  const found = await locate(q, taskId);
  const status = await statusOfLocated(q, taskId, found, now);
  if (!found) return { status };
  switch (found.at) {
    case "inflight":
      return {
        status,
        value: (await q.body(found.task)).value,
        progress: await q.sealedField(found.task, "progress"),
        error: await q.sealedField(found.task, "error"),
      };
    case "window":
      return { status, value: found.task.body?.value };
    case "backlog":
      return { status, value: (await q.source(found.pos))?.value };
    case "due":
    case "dead":
      return { status, value: found.row.body.value, progress: found.row.progress, error: found.row.error };
    case "ended":
      return { status };
  }
}

export async function queueStats(q: QueueState, retentionMs: number, now = Date.now()): Promise<QueueStats> {
  const parked = q.parkedView;
  const dueNow = parked.dueNow(now);
  const s: QueueStats = {
    ready: q.backlogView.count + dueNow,
    delayed: Math.max(0, parked.delayedCount - dueNow),
    inFlight: 0,
    dead: parked.deadCount,
    handingOver: 0,
    oldestWaitingMs: 0,
    workers: [],
    completedPer10s: q.completedPer10s(now),
  };
  let oldest = Infinity;
  for (const t of q.inFlightTasks()) {
    const leaseExpired = t.state === "leased" && (t.leaseUntil ?? 0) <= now;
    if (t.state === "ready" || leaseExpired) {
      s.ready++;
      oldest = Math.min(oldest, t.expiresAt - retentionMs);
    } else if (t.state === "leased") {
      s.inFlight++;
      s.workers.push({ workerId: t.worker ?? "", taskId: t.id, leaseUntil: t.leaseUntil ?? 0, attempt: t.attempt });
    } else if (t.state === "handing-over") s.handingOver++;
  }
  for (const r of parked.dueWindow()) if (r.dueAt <= now) oldest = Math.min(oldest, r.expiresAt - retentionMs);
  const head = await q.backlogView.oldestAddedAt(retentionMs);
  if (head !== undefined) oldest = Math.min(oldest, head);
  if (oldest !== Infinity) s.oldestWaitingMs = Math.max(0, now - oldest);
  return s;
}

/** Tasks of one public state (or all), oldest first within each state, a page at a time (metadata only). */
export async function listTasks(
  q: QueueState,
  state: PublicState | undefined,
  offset: number,
  limit: number,
  now = Date.now(),
): Promise<{ total: number; tasks: TaskStatus[] }> {
  const inflight = q
    .inFlightTasks()
    .map(t => inFlightStatus(t, now))
    .sort((a, b) => (a.expiresAt ?? 0) - (b.expiresAt ?? 0));
  const parked = q.parkedView;
  const groups: {
    state: PublicState;
    total: number;
    page: (offset: number, limit: number) => Promise<TaskStatus[]>;
  }[] = [];
  for (const st of ["leased", "handing-over"] as const) {
    const mine = inflight.filter(t => t.state === st);
    groups.push({ state: st, total: mine.length, page: async (o, l) => mine.slice(o, o + l) });
  }
  const waitingInFlight = inflight.filter(t => t.state === "waiting");
  groups.push({
    state: "waiting",
    total: waitingInFlight.length + q.backlogView.count,
    page: async (o, l) => {
      const first = waitingInFlight.slice(o, o + l);
      if (first.length >= l) return first;
      const more = await q.backlogView.list(Math.max(0, o - waitingInFlight.length), l - first.length);
      return [...first, ...more.map(waitingStatus)];
    },
  });
  groups.push({
    state: "delayed",
    total: parked.delayedCount,
    page: async (o, l) => (await parked.list("due", o, l)).map(r => parkedStatus(r, "delayed")),
  });
  groups.push({
    state: "dead",
    total: parked.deadCount,
    page: async (o, l) => (await parked.list("dead", o, l)).map(r => parkedStatus(r, "dead")),
  });
  const chosen = state === undefined ? groups : groups.filter(g => g.state === state);
  const total = chosen.reduce((n, g) => n + g.total, 0);
  const tasks: TaskStatus[] = [];
  let skip = offset;
  for (const g of chosen) {
    if (tasks.length >= limit) break;
    if (skip >= g.total) {
      skip -= g.total;
      continue;
    }
    tasks.push(...(await g.page(skip, limit - tasks.length)));
    skip = 0;
  }
  return { total, tasks };
}

/** Dead tasks, oldest first (sealed errors; the engine opens them for the caller). */
export async function deadTasks(q: QueueState, limit: number): Promise<ParkedTask[]> {
  return q.parkedView.list("dead", 0, limit);
}
