/**
 * Recovery: a checkpoint's snapshot plus the events committed after it -> the state the previous
 * owner had committed, and the derived rows those events imply (the takeover rewrites them before it
 * serves). Pure: no I/O, unit-tested against the live state machine (test/queue-state.test.ts).
 */
import { RecentMap } from "./recent-map";
import type { BacklogSnapshot, ParkedSnapshot, Segment, SlotCount, Snapshot } from "./checkpoint";
import type { IndexWrite, ParkedHint } from "./store";
import {
  EventFlag,
  EventKind,
  splitPosition,
  stateOfCode,
  type PublicState,
  type StoredEvent,
  type Task,
} from "./task";

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

export const minuteOf = (t: number): number => Math.floor(t / MINUTE_MS) * MINUTE_MS;

/** A row to write because an event was committed. Bodies come from memory, or are read from `src`. */
export type DerivedWrite =
  | ({ kind: "index" } & IndexWrite)
  | { kind: "hint"; taskId: string; hint: ParkedHint; at: number; expiresAt: number }
  | { kind: "due" | "dead"; row: ParkedSpec }
  | { kind: "dueCancel"; minute: number; part: number; dueAt: number; pos: number; expiresAt: number }
  | { kind: "deadConsume"; hour: number; part: number; pos: number; expiresAt: number }
  | { kind: "backlogCancel"; src: number; expiresAt: number };

/** A parked row as an event defines it; `src` names where the body is when the event does not carry it. */
export interface ParkedSpec {
  slot: number;
  part: number;
  dueAt: number;
  pos: number;
  taskId: string;
  seq: number;
  clientId: boolean;
  src: number;
  body?: import("./task").TaskBody;
  attempt: number;
  maxAttempts: number;
  expiresAt: number;
  error?: import("../codec").Sealed;
  /** Where the error is when it is not carried. */
  errorPos?: number;
  reason?: string;
}

export interface Recovered {
  nextSeq: number;
  backlog: BacklogSnapshot;
  parked: ParkedSnapshot;
  /** In flight, in the order they entered (returned tasks are delivered in this order). */
  inflight: Map<string, Task>;
  lastAcked: Map<string, string>;
  completions: { slot: number; counts: number[] };
  /** Tasks that ended during the replay, for `status`. */
  ended: RecentMap<PublicState>;
  redo: DerivedWrite[];
  /** How many events were folded onto the snapshot. */
  replayed: number;
}

export function emptySnapshot(): Snapshot {
  return {
    nextSeq: 1,
    backlog: { cursor: 0, count: 0, purgeBound: 0, segments: [], opened: [] },
    parked: { dueCursor: null, due: [], dead: [] },
    inflight: [],
    lastAcked: [],
    completions: { slot: 0, counts: [] },
  };
}

function bump(list: SlotCount[], slot: number, byWritten: number, byCount: number): void {
  let s = list.find(x => x.slot === slot);
  if (!s) {
    s = { slot, written: 0, count: 0 };
    list.push(s);
    list.sort((a, b) => a.slot - b.slot);
  }
  s.written += byWritten;
  s.count = Math.max(0, s.count + byCount);
}

/** Ranges the backlog may still span: the snapshot's, plus every range the previous owners wrote. */
export function mergeSegments(known: Segment[], partitions: { range: number; bucket: number }[]): Segment[] {
  const byRange = new Map<number, number>();
  for (const s of known) byRange.set(s.range, Math.max(byRange.get(s.range) ?? 0, s.lastBucket));
  for (const p of partitions) byRange.set(p.range, Math.max(byRange.get(p.range) ?? 0, p.bucket));
  return [...byRange].map(([range, lastBucket]) => ({ range, lastBucket })).sort((a, b) => a.range - b.range);
}

const REMEMBERED_ENDED = 10_000;

/**
 * Folds `events` (in log order, none of them the snapshot's own chunks) onto `snapshot`.
 * `partitions` are the partitions the previous owners listed (replay and open): the backlog may
 * continue in them.
 */
export function recover(
  snapshot: Snapshot | null,
  events: StoredEvent[],
  partitions: { range: number; bucket: number }[] = [],
): Recovered {
  const s = structuredClone(snapshot ?? emptySnapshot());
  const backlog = s.backlog;
  const parked = s.parked;
  const inflight = new Map<string, Task>(s.inflight.map(t => [t.id, t]));
  const lastAcked = new Map<string, string>(s.lastAcked);
  const ended = new RecentMap<PublicState>(REMEMBERED_ENDED);
  const redo: DerivedWrite[] = [];
  let nextSeq = s.nextSeq;

  const end = (t: Task, as: PublicState) => {
    inflight.delete(t.id);
    ended.set(t.id, as);
  };
  const specOf = (t: Task, slot: number, part: number, dueAt: number, pos: number): ParkedSpec => ({
    slot,
    part,
    dueAt,
    pos,
    taskId: t.id,
    seq: t.seq,
    clientId: t.clientId,
    src: t.src,
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    expiresAt: t.expiresAt,
    errorPos: t.errorPos,
    reason: t.reason,
  });

  for (const e of events) {
    if (e.seq !== undefined && e.seq >= nextSeq) nextSeq = e.seq + 1;
    const t = inflight.get(e.taskId);
    const flags = e.flags ?? 0;
    switch (e.kind) {
      case EventKind.Add: {
        if (e.seq === undefined) break;
        const clientId = e.clientId ?? false;
        redo.push({ kind: "index", taskId: e.taskId, seq: e.seq, pos: e.at, clientId, expiresAt: e.expiresAt });
        if (stateOfCode(e.state) === "delayed" && e.notBefore !== undefined) {
          const minute = minuteOf(e.notBefore);
          const part = e.refPart ?? 0;
          bump(parked.due, minute, 1, 1);
          const hint: ParkedHint = { kind: "delayed", minute, part, dueAt: e.notBefore, pos: e.at };
          redo.push({
            kind: "due",
            row: {
              slot: minute,
              part,
              dueAt: e.notBefore,
              pos: e.at,
              taskId: e.taskId,
              seq: e.seq,
              clientId,
              src: e.at,
              body: e.value && { value: e.value, token: e.token },
              attempt: 0,
              maxAttempts: e.maxAttempts ?? 0,
              expiresAt: e.expiresAt,
            },
          });
          redo.push({ kind: "hint", taskId: e.taskId, hint, at: e.at, expiresAt: e.expiresAt });
        } else {
          backlog.count++;
        }
        break;
      }
      case EventKind.Lease: {
        const src = e.src ?? 0;
        let task = t;
        if ((flags & EventFlag.FromBacklog) !== 0) {
          // A delivery from the backlog: strictly first in, first out, so every source up to it is done.
          backlog.count = Math.max(0, backlog.count - 1);
          backlog.cursor = Math.max(backlog.cursor, src + 1);
        }
        if (!task) {
          task = {
            id: e.taskId,
            seq: e.seq ?? 0,
            clientId: (flags & EventFlag.ClientId) !== 0,
            src,
            hasToken: (flags & EventFlag.HasToken) !== 0,
            attempt: 0,
            maxAttempts: e.maxAttempts ?? 0,
            state: "leased",
            expiresAt: e.expiresAt,
            cancelled: false,
          };
          inflight.set(task.id, task);
        }
        task.state = "leased";
        task.attempt = e.attempt ?? task.attempt + 1;
        task.worker = e.worker;
        task.leaseUntil = e.leaseUntil;
        task.ttrMs = e.ttrMs;
        task.leaseStart = e.leaseStart;
        task.notBefore = undefined;
        break;
      }
      case EventKind.Carry: {
        if (e.seq === undefined) break;
        const state = stateOfCode(e.state);
        const clientId = e.clientId ?? false;
        redo.push({
          kind: "index",
          taskId: e.taskId,
          seq: e.seq,
          pos: e.at,
          clientId,
          expiresAt: e.expiresAt,
          delivered: state === "leased",
        });
        if (state === "leased") {
          // A delayed task delivered when due: the due cursor passes its row.
          const dueAt = e.refTime ?? 0;
          const minute = minuteOf(dueAt);
          parked.dueCursor = { minute, part: e.refPart ?? 0, dueAt, pos: e.ref ?? 0 };
          bump(parked.due, minute, 0, -1);
          inflight.set(e.taskId, {
            id: e.taskId,
            seq: e.seq,
            clientId,
            src: e.at,
            hasToken: e.token !== undefined,
            attempt: e.attempt ?? 1,
            maxAttempts: e.maxAttempts ?? 0,
            state: "leased",
            worker: e.worker,
            leaseUntil: e.leaseUntil,
            ttrMs: e.ttrMs,
            leaseStart: e.leaseStart,
            expiresAt: e.expiresAt,
            cancelled: false,
            progressPos: e.progress ? e.at : undefined,
            errorPos: e.error ? e.at : undefined,
          });
        } else {
          // A dead task redriven: a new ready source at the end of the backlog.
          const hour = e.refTime ?? 0;
          bump(parked.dead, hour, 0, -1);
          redo.push({ kind: "deadConsume", hour, part: e.refPart ?? 0, pos: e.ref ?? 0, expiresAt: e.expiresAt });
          backlog.count++;
        }
        break;
      }
      case EventKind.Ack: {
        if (e.worker !== undefined) {
          lastAcked.delete(e.worker);
          lastAcked.set(e.worker, e.taskId);
        }
        if (!t) break;
        t.worker = undefined;
        t.leaseUntil = undefined;
        t.ttrMs = undefined;
        t.leaseStart = undefined;
        if (e.result) {
          t.state = "handing-over";
          t.resultPos = e.at;
        } else if (t.cancelled && t.resultPos !== undefined) {
          // A cancelled task's outcome was sealed at the cancel: it is handed over from there.
          t.state = "handing-over";
        } else end(t, t.cancelled ? "cancelled" : "done");
        break;
      }
      case EventKind.Handed:
        if (t) end(t, t.cancelled ? "cancelled" : "done");
        break;
      case EventKind.Update:
        if (!t) break;
        if (e.leaseUntil !== undefined) t.leaseUntil = e.leaseUntil;
        if (e.progress) t.progressPos = e.at;
        break;
      case EventKind.Release: {
        if (!t) break;
        t.worker = undefined;
        t.leaseUntil = undefined;
        t.ttrMs = undefined;
        t.leaseStart = undefined;
        if (e.error) t.errorPos = e.at;
        if (stateOfCode(e.state) === "delayed" && e.notBefore !== undefined) {
          const minute = minuteOf(e.notBefore);
          const part = e.refPart ?? 0;
          bump(parked.due, minute, 1, 1);
          redo.push({ kind: "due", row: specOf(t, minute, part, e.notBefore, e.at) });
          redo.push({
            kind: "hint",
            taskId: t.id,
            hint: { kind: "delayed", minute, part, dueAt: e.notBefore, pos: e.at },
            at: e.at,
            expiresAt: t.expiresAt,
          });
          inflight.delete(t.id);
        } else {
          // Returned: it waits in memory, behind the tasks returned before it.
          inflight.delete(t.id);
          t.state = "ready";
          inflight.set(t.id, t);
        }
        break;
      }
      case EventKind.Dead: {
        if (!t) break;
        const hour = e.refTime ?? 0;
        const part = e.refPart ?? 0;
        t.reason = e.reason;
        bump(parked.dead, hour, 1, 1);
        const row = specOf(t, hour, part, 0, e.at);
        if (e.error) {
          row.error = e.error;
          row.errorPos = undefined;
        }
        redo.push({ kind: "dead", row });
        redo.push({
          kind: "hint",
          taskId: t.id,
          hint: { kind: "dead", hour, part, pos: e.at },
          at: e.at,
          expiresAt: t.expiresAt,
        });
        inflight.delete(t.id);
        break;
      }
      case EventKind.Cancel: {
        const where = stateOfCode(e.state);
        if (where === "leased") {
          if (t) {
            t.cancelled = true;
            if (e.result) t.resultPos = e.at;
          }
          break;
        }
        if (where === "ready" && t) {
          // A returned task, cancelled before it was delivered again.
          if (e.result) {
            t.cancelled = true;
            t.state = "handing-over";
            t.resultPos = e.at;
          } else end(t, "cancelled");
          break;
        }
        if (where === "ready") {
          backlog.count = Math.max(0, backlog.count - 1);
          redo.push({ kind: "backlogCancel", src: e.ref ?? 0, expiresAt: e.expiresAt });
        } else if (where === "delayed") {
          const dueAt = e.refTime ?? 0;
          const minute = minuteOf(dueAt);
          bump(parked.due, minute, 0, -1);
          redo.push({
            kind: "dueCancel",
            minute,
            part: e.refPart ?? 0,
            dueAt,
            pos: e.ref ?? 0,
            expiresAt: e.expiresAt,
          });
        } else if (where === "dead") {
          const hour = e.refTime ?? 0;
          bump(parked.dead, hour, 0, -1);
          redo.push({ kind: "deadConsume", hour, part: e.refPart ?? 0, pos: e.ref ?? 0, expiresAt: e.expiresAt });
        }
        redo.push({ kind: "hint", taskId: e.taskId, hint: { kind: "cancelled" }, at: e.at, expiresAt: e.expiresAt });
        if (e.result) {
          // The workflow still hears of it: the cancel event carries the token (it is the task's source).
          inflight.set(e.taskId, {
            id: e.taskId,
            seq: e.seq ?? 0,
            clientId: (flags & EventFlag.ClientId) !== 0,
            src: e.at,
            hasToken: true,
            attempt: e.attempt ?? 0,
            maxAttempts: e.maxAttempts ?? 0,
            state: "handing-over",
            expiresAt: e.expiresAt,
            cancelled: true,
            resultPos: e.at,
          });
        } else {
          ended.set(e.taskId, "cancelled");
        }
        break;
      }
      case EventKind.Purge: {
        backlog.cursor = Math.max(backlog.cursor, e.at);
        backlog.count = 0;
        backlog.purgeBound = e.at;
        for (const task of inflight.values()) if (task.state === "ready") end(task, "cancelled");
        for (const d of parked.due) d.count = 0;
        for (const d of parked.dead) d.count = 0;
        break;
      }
    }
  }

  const cursorRange = splitPosition(backlog.cursor).range;
  backlog.segments = mergeSegments(backlog.segments, partitions).filter(seg => seg.range >= cursorRange);
  parked.due = parked.due.filter(d => d.count > 0 || d.written > 0);
  return {
    nextSeq,
    backlog,
    parked,
    inflight,
    lastAcked,
    completions: s.completions,
    ended,
    redo,
    replayed: events.length,
  };
}
