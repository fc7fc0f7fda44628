/**
 * A queue state machine on an in-memory log and in-memory derived tables, for unit tests without
 * Cassandra: the same QueueState, Backlog and Parked classes the owner runs, with fakes at their
 * narrow interfaces (LogWriter, LogReader, ParkedReader, the derived writer and the lookups).
 */
import { Backlog, type LogReader } from "../../lib/queue/backlog";
import type { Snapshot } from "../../lib/queue/checkpoint";
import type { CommittedEvent, LogWriter } from "../../lib/queue/event-log";
import { compareDue, Parked, type ParkedReader } from "../../lib/queue/parked";
import { QueueState, type StateHooks } from "../../lib/queue/queue-state";
import { emptySnapshot, recover, type DerivedWrite, type ParkedSpec } from "../../lib/queue/recovery";
import type { IndexEntry } from "../../lib/queue/store";
import {
  position,
  type EventKind,
  type LogEvent,
  type ParkedTask,
  type StoredEvent,
  type Task,
} from "../../lib/queue/task";

/** An append-only log that commits each batch on the next microtask turn. */
export class MemoryLog implements LogWriter {
  readonly events: StoredEvent[] = [];
  private next: number;
  private committed: number;
  private pending: { at: number; event: LogEvent; resolve: () => void }[] = [];
  private scheduled = false;
  readonly listeners: ((events: CommittedEvent[]) => void)[] = [];
  /** The kinds of the events of each flush (one flush: what was appended in one turn), in order. */
  readonly flushes: EventKind[][] = [];

  constructor(readonly range = 1) {
    this.next = position(range, 0, 0);
    this.committed = this.next;
  }

  get committedEnd(): number {
    return this.committed;
  }

  get nextPosition(): number {
    return this.next;
  }

  append(event: LogEvent): { at: number; committed: Promise<void> } {
    const at = this.next++;
    const committed = new Promise<void>(resolve => this.pending.push({ at, event: { ...event }, resolve }));
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
    return { at, committed };
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    this.flushes.push(batch.map(p => p.event.kind));
    for (const p of batch) this.events.push({ ...p.event, at: p.at });
    this.committed = batch[batch.length - 1]!.at + 1;
    const committed = batch.map(p => ({ at: p.at, event: p.event }));
    for (const l of this.listeners) l(committed);
    for (const p of batch) p.resolve();
  }

  confirmFence(): Promise<void> {
    return Promise.resolve();
  }

  eventAt(at: number): StoredEvent | null {
    return this.events.find(e => e.at === at) ?? null;
  }
}

/** The derived tables: task_index, due and dead rows with their marks, backlog cancellations. */
export interface Tables {
  index: Map<string, IndexEntry & { stamp: number; hintStamp: number }>;
  due: Map<string, ParkedTask>;
  dead: Map<string, ParkedTask>;
  cancels: Set<number>;
}

export function emptyTables(): Tables {
  return { index: new Map(), due: new Map(), dead: new Map(), cancels: new Set() };
}

/** A copy of the tables whose rows can change without changing the original (bodies are shared). */
export function cloneTables(t: Tables): Tables {
  const rows = <V extends object>(m: Map<string, V>) => new Map([...m].map(([k, v]) => [k, { ...v }]));
  return { index: rows(t.index), due: rows(t.due), dead: rows(t.dead), cancels: new Set(t.cancels) };
}

const dueKey = (minute: number, part: number, dueAt: number, pos: number) => `${minute}|${part}|${dueAt}|${pos}`;
const deadKey = (hour: number, part: number, pos: number) => `${hour}|${part}|${pos}`;

/** Applies one derived write to `tables` (bodies read back from `log` when the write does not carry them). */
export function applyDerived(tables: Tables, log: MemoryLog, w: DerivedWrite): ParkedTask | undefined {
  switch (w.kind) {
    case "index": {
      const old = tables.index.get(w.taskId);
      // Stamped with the event's position, like the real table: the later event wins.
      if (old && old.stamp > w.pos && old.hintStamp > w.pos) return undefined;
      const hint: IndexEntry["hint"] = w.delivered ? { kind: "delivered" } : { kind: "none" };
      const keepHint = old && old.hintStamp > w.pos;
      tables.index.set(w.taskId, {
        seq: w.seq,
        pos: w.pos,
        clientId: w.clientId,
        hint: keepHint ? old.hint : hint,
        stamp: w.pos,
        hintStamp: keepHint ? old.hintStamp : w.pos,
      });
      return undefined;
    }
    case "hint": {
      const old = tables.index.get(w.taskId);
      if (old && old.hintStamp > w.at) return undefined;
      tables.index.set(w.taskId, {
        seq: old?.seq ?? 0,
        pos: old?.pos ?? 0,
        clientId: old?.clientId ?? false,
        stamp: old?.stamp ?? 0,
        hint: w.hint,
        hintStamp: w.at,
      });
      return undefined;
    }
    case "due":
    case "dead": {
      const row = rowOf(log, w.row);
      const map = w.kind === "due" ? tables.due : tables.dead;
      const key =
        w.kind === "due" ? dueKey(row.slot, row.part, row.dueAt, row.pos) : deadKey(row.slot, row.part, row.pos);
      const consumed = map.get(key)?.consumed ?? false;
      map.set(key, { ...row, consumed });
      return row;
    }
    case "dueCancel": {
      const key = dueKey(w.minute, w.part, w.dueAt, w.pos);
      const old = tables.due.get(key);
      if (old) old.consumed = true;
      else tables.due.set(key, { ...placeholderRow(w.minute, w.part, w.dueAt, w.pos), consumed: true });
      return undefined;
    }
    case "deadConsume": {
      const key = deadKey(w.hour, w.part, w.pos);
      const old = tables.dead.get(key);
      if (old) old.consumed = true;
      else tables.dead.set(key, { ...placeholderRow(w.hour, w.part, 0, w.pos), consumed: true });
      return undefined;
    }
    case "backlogCancel":
      tables.cancels.add(w.src);
      return undefined;
  }
}

function placeholderRow(slot: number, part: number, dueAt: number, pos: number): Omit<ParkedTask, "consumed"> {
  return {
    slot,
    part,
    dueAt,
    pos,
    taskId: "",
    seq: 0,
    clientId: false,
    body: { value: { keyId: "", blob: Buffer.alloc(0) } },
    attempt: 0,
    maxAttempts: 0,
    expiresAt: 0,
  };
}

function rowOf(log: MemoryLog, spec: ParkedSpec): ParkedTask {
  const src = spec.body ? undefined : log.eventAt(spec.src);
  const body = spec.body ?? { value: src!.value!, token: src!.token };
  const error = spec.error ?? (spec.errorPos !== undefined ? log.eventAt(spec.errorPos)?.error : undefined);
  return {
    slot: spec.slot,
    part: spec.part,
    dueAt: spec.dueAt,
    pos: spec.pos,
    taskId: spec.taskId,
    seq: spec.seq,
    clientId: spec.clientId,
    body,
    attempt: spec.attempt,
    maxAttempts: spec.maxAttempts,
    expiresAt: spec.expiresAt,
    error,
    reason: spec.reason,
    consumed: false,
  };
}

export interface MemoryQueue {
  log: MemoryLog;
  tables: Tables;
  state: QueueState;
  backlog: Backlog;
  parked: Parked;
  notifications: { type: string; taskId: string }[];
  handovers: Task[];
  /** Waits until every commit and derived write so far has happened. */
  settle(): Promise<void>;
}

export interface MemoryQueueOptions {
  windowMax?: number;
  partSize?: number;
  retentionMs?: number;
  /** Start from this snapshot (a recovery); with `tables` and `log` of the previous owner. */
  recovered?: ReturnType<typeof recover>;
  log?: MemoryLog;
  tables?: Tables;
}

/** Builds a queue state on in-memory parts. */
export function memoryQueue(o: MemoryQueueOptions = {}): MemoryQueue {
  const log = o.log ?? new MemoryLog();
  const tables = o.tables ?? emptyTables();
  const recovered = o.recovered ?? recover(emptySnapshot(), []);
  const notifications: { type: string; taskId: string }[] = [];
  const handovers: Task[] = [];
  const windowMax = o.windowMax ?? 8;
  const partSize = o.partSize ?? 4;
  const reader: LogReader = {
    async read(from, before, limit) {
      const events = log.events.filter(e => e.at >= from && e.at < before).slice(0, limit);
      const last = events[events.length - 1];
      const end = events.length < limit;
      return { events, next: end ? before : last!.at + 1, end };
    },
  };
  const parkedReader: ParkedReader = {
    async readDue(minute, part, after, limit) {
      const rows = [...tables.due.values()]
        .filter(r => r.slot === minute && r.part === part)
        .filter(r => !after || compareDue({ minute, part, dueAt: r.dueAt, pos: r.pos }, { minute, part, ...after }) > 0)
        .sort((a, b) => a.dueAt - b.dueAt || a.pos - b.pos);
      return { rows: rows.slice(0, limit).map(r => ({ ...r })), done: rows.length <= limit };
    },
    async readDead(hour, part, afterPos, limit) {
      const rows = [...tables.dead.values()]
        .filter(r => r.slot === hour && r.part === part && (afterPos === null || r.pos > afterPos))
        .sort((a, b) => a.pos - b.pos);
      return { rows: rows.slice(0, limit).map(r => ({ ...r })), done: rows.length <= limit };
    },
  };
  const fail = (err: Error) => {
    throw err;
  };
  // The backlog and parked stores call back into the state built after them.
  const late = {} as { state: QueueState };
  const backlog = new Backlog(recovered.backlog, {
    reader,
    log,
    limits: { windowMax, windowMaxBytes: 1 << 30 },
    readCancels: async ref =>
      [...tables.cancels].filter(
        p => p >= position(ref.range, ref.bucket, 0) && p < position(ref.range, ref.bucket + 1, 0),
      ),
    onReadError: fail,
    onLoaded: () => late.state.dispatch(),
  });
  const parked = new Parked(recovered.parked, parkedReader, { windowMax, partSize }, fail, () => late.state.dispatch());
  parked.setPurgeBound(recovered.backlog.purgeBound);
  const inFlightWrites = new Set<Promise<void>>();
  const derived = {
    pendingIndex: new Map<string, IndexEntry>(),
    enqueue(w: DerivedWrite) {
      const p = Promise.resolve().then(() => {
        const row = applyDerived(tables, log, w);
        if (row) parked.rowDurable(w.kind as "due" | "dead", row);
        if (w.kind === "dueCancel" || w.kind === "deadConsume") parked.markDurable(w.pos);
        if (w.kind === "backlogCancel") backlog.cancelDurable(w.src);
      });
      inFlightWrites.add(p);
      void p.finally(() => inFlightWrites.delete(p));
    },
    room: async () => undefined,
    pendingOf: () => undefined,
    hasPendingEntry: () => false,
  };
  const hooks: StateHooks = {
    handover: t => handovers.push(t),
    handoversPending: () => undefined,
    notify: (type, t) => notifications.push({ type, taskId: t.id }),
  };
  const state = new QueueState(
    {
      log,
      backlog,
      parked,
      derived,
      readIndex: async taskId => {
        const e = tables.index.get(taskId);
        return e ? { seq: e.seq, pos: e.pos, clientId: e.clientId, hint: e.hint } : null;
      },
      readSource: async at => log.eventAt(at),
      readParked: async (table, slot, part, dueAt, pos) =>
        (table === "due"
          ? tables.due.get(dueKey(slot, part, dueAt, pos))
          : tables.dead.get(deadKey(slot, part, pos))) ?? null,
      loadBody: async src => {
        const e = log.eventAt(src);
        if (!e?.value) throw new Error(`no source at ${src}`);
        return { value: e.value, token: e.token };
      },
      hooks,
      limits: { maxLeaseMs: 3_600_000, retentionMs: o.retentionMs ?? 86_400_000, handoverRetentionMs: 86_400_000 },
    },
    recovered,
  );
  late.state = state;
  log.listeners.push(events => state.committed(events));
  const settle = async () => {
    for (let i = 0; i < 50; i++) {
      await new Promise(r => setImmediate(r));
      if (inFlightWrites.size === 0) await new Promise(r => setImmediate(r));
    }
  };
  return { log, tables, state, backlog, parked, notifications, handovers, settle };
}

/** The parts of a snapshot two owners must agree on (positions of bodies aside, everything). */
export function comparable(s: Snapshot): unknown {
  return {
    nextSeq: s.nextSeq,
    backlog: { cursor: s.backlog.cursor, count: s.backlog.count, purgeBound: s.backlog.purgeBound },
    parked: {
      dueCursor: s.parked.dueCursor,
      due: s.parked.due.map(d => [d.slot, d.written, d.count]),
      dead: s.parked.dead.filter(d => d.count > 0 || d.written > 0).map(d => [d.slot, d.written, d.count]),
    },
    inflight: s.inflight
      .map(t => ({
        id: t.id,
        seq: t.seq,
        src: t.src,
        state: t.state,
        attempt: t.attempt,
        maxAttempts: t.maxAttempts,
        worker: t.worker,
        leaseUntil: t.leaseUntil,
        cancelled: t.cancelled,
        hasToken: t.hasToken,
        resultPos: t.resultPos,
        errorPos: t.errorPos,
        progressPos: t.progressPos,
      }))
      .sort((a, b) => (a.id < b.id ? -1 : 1)),
    lastAcked: [...s.lastAcked].sort(),
  };
}
