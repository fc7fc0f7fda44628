/**
 * The backlog: the queue's ready sources (adds that are not delayed, redriven tasks) in log order,
 * from the cursor on. The owner keeps only its head in memory (the window); the rest stays in the
 * log and is read a page at a time. Delivery is strictly first in, first out, which is what lets a
 * single position (the cursor) say what has been delivered: see docs/ARCHITECTURE.md, "The backlog".
 *
 * Two positions matter: the cursor (every source before it was delivered, cancelled, purged or
 * expired) and the frontier `readEnd` (every source before it has been considered: it is in the
 * window, or before the cursor). The window is exactly the undelivered sources in [cursor, readEnd).
 */
import type { BacklogSnapshot, Segment } from "./checkpoint";
import type { CommittedEvent } from "./event-log";
import type { QueueStore } from "./store";
import {
  EventFlag,
  EventKind,
  position,
  splitPosition,
  stateOfCode,
  type BucketRef,
  type LogEvent,
  type StoredEvent,
  type Task,
} from "./task";

/** Reads the log in position order; implemented over Cassandra by LogPager, in memory by tests. */
export interface LogReader {
  /**
   * Events at positions in [from, before), in order, at most `limit`, all from one partition (fewer
   * is fine). `next` is where to continue; `end` is true when nothing is left before `before`.
   */
  read(from: number, before: number, limit: number): Promise<{ events: StoredEvent[]; next: number; end: boolean }>;
}

/** What the pager needs to know to walk the log: the ranges it spans and when partitions were opened. */
export interface LogLayout {
  segments: Segment[];
  current: BucketRef;
  /** When the partition starting at this position was opened (ms), if known. */
  openedAt(base: number): number | undefined;
  retentionMs: number;
}

/** The first position of the partition after (range, bucket): the next bucket, or the next range's first. */
export function partitionAfter(layout: Pick<LogLayout, "segments" | "current">, range: number, bucket: number): number {
  const { segments, current } = layout;
  const last = range === current.range ? current.bucket : segments.find(s => s.range === range)?.lastBucket;
  if (range === current.range || (last !== undefined && bucket < last)) return position(range, bucket + 1, 0);
  const later = segments.find(s => s.range > range)?.range ?? current.range;
  return later > range ? position(later, 0, 0) : position(range, bucket + 1, 0);
}

/** Pages a queue's log across partitions and ranges: the segments, then the current range. */
export class LogPager implements LogReader {
  constructor(
    private readonly store: QueueStore,
    private readonly queue: string,
    private readonly layout: () => LogLayout,
  ) {}

  /** The run rows the last page read (absolute positions [first, end)): where a page from inside one starts. */
  private lastRuns: [number, number][] = [];
  /** Events per row of the last page: how many rows the next one asks for. */
  private eventsPerRow: number | undefined;

  /** The first position of the run row holding `at`, if the last page read it and `at` is inside it. */
  private runStart(at: number): number | undefined {
    for (const [first, end] of this.lastRuns) if (first < at && at < end) return splitPosition(first).pos;
    return undefined;
  }

  async read(
    from: number,
    before: number,
    limit: number,
  ): Promise<{ events: StoredEvent[]; next: number; end: boolean }> {
    let at = from;
    for (let hops = 0; hops < 100_000 && at < before; hops++) {
      const layout = this.layout();
      const { range, bucket, pos } = splitPosition(at);
      const after = partitionAfter(layout, range, bucket);
      // Every row of a partition was written before the next one was opened: when that is longer
      // ago than the retention, all of them have expired, and reading them would only scan tombstones.
      const nextOpened = layout.openedAt(after);
      if (nextOpened !== undefined && nextOpened + layout.retentionMs < Date.now()) {
        at = after;
        continue;
      }
      const end = splitPosition(before);
      const beforePos = end.range === range && end.bucket === bucket ? end.pos : undefined;
      const page = await this.store.readBucket(
        this.queue,
        { range, bucket },
        pos,
        limit,
        beforePos,
        this.runStart(at),
        undefined,
        this.eventsPerRow,
      );
      const { events, done } = page;
      if (page.rows > 0 && events.length > 0) this.eventsPerRow = events.length / page.rows;
      this.lastRuns = page.runs.map(([first, end]) => [position(range, bucket, first), position(range, bucket, end)]);
      if (events.length > 0) {
        const next = done ? after : events[events.length - 1]!.at + 1;
        return { events, next: Math.min(next, before), end: next >= before };
      }
      at = after;
    }
    return { events: [], next: before, end: true };
  }
}

/** Whether an event puts a task at the end of the backlog. */
export function isReadySource(e: LogEvent): boolean {
  if (e.kind === EventKind.Add) return stateOfCode(e.state) !== "delayed";
  return e.kind === EventKind.Carry && stateOfCode(e.state) === "ready";
}

/** The waiting task a ready source describes (with its body). */
export function taskOfSource(e: LogEvent, at: number): Task {
  return {
    id: e.taskId,
    seq: e.seq ?? 0,
    clientId: e.clientId ?? ((e.flags ?? 0) & EventFlag.ClientId) !== 0,
    src: at,
    body: e.value ? { value: e.value, token: e.token } : undefined,
    hasToken: e.token !== undefined,
    attempt: e.attempt ?? 0,
    maxAttempts: e.maxAttempts ?? 0,
    state: "ready",
    expiresAt: e.expiresAt,
    cancelled: false,
  };
}

const bytesOf = (t: Task): number => 200 + (t.body?.value.blob.length ?? 0) + (t.body?.token?.blob.length ?? 0);

export interface BacklogLimits {
  windowMax: number;
  windowMaxBytes: number;
}

export interface BacklogDeps {
  reader: LogReader;
  log: { readonly committedEnd: number; readonly nextPosition: number };
  limits: BacklogLimits;
  /** Positions of cancelled waiting tasks in one log partition (backlog_cancels). */
  readCancels(ref: BucketRef): Promise<number[]>;
  onReadError(err: Error): void;
  /** A page read put tasks in the window: waiting fetches may take them. */
  onLoaded(): void;
}

/** Smallest window a demand opens. */
const MIN_TARGET = 16;
/** A window not asked for this long shrinks to nothing. */
const IDLE_MS = 10_000;

const partitionKey = (at: number): string => {
  const { range, bucket } = splitPosition(at);
  return `${range}:${bucket}`;
};

export class Backlog {
  private window: Task[] = [];
  private head = 0;
  private windowBytes = 0;
  /** Every source before this position has been considered (it is in the window, or before the cursor). */
  private readEnd: number;
  private reading: Promise<void> | null = null;
  /**
   * Cancelled waiting sources at or after the cursor that a read must skip: those whose
   * backlog_cancels row is not durable yet, and those of the partitions already read.
   */
  private readonly cancelledAt = new Set<number>();
  private readonly pendingCancels = new Map<string, { n: number; waiters: (() => void)[] }>();
  private readonly loadedCancels = new Set<string>();
  private segmentsList: Segment[];
  private readonly opened: Map<number, number>;
  private waiting: number;
  private purgedBefore: number;
  /** How many tasks the window may hold now: grows with demand, falls to 0 when nobody fetches. */
  private target = 0;
  private lastDemand = 0;
  /** Add time of the head of the backlog when it is not in the window (for stats), by cursor. */
  private headAddedAt: { cursor: number; at: number } | null = null;

  constructor(
    snapshot: BacklogSnapshot,
    private readonly deps: BacklogDeps,
  ) {
    this.readEnd = snapshot.cursor;
    this.segmentsList = [...snapshot.segments];
    this.opened = new Map(snapshot.opened);
    this.waiting = snapshot.count;
    this.purgedBefore = snapshot.purgeBound;
  }

  /** Position of the oldest undelivered ready source. */
  get cursor(): number {
    return this.window[this.head]?.src ?? this.readEnd;
  }

  /** Waiting tasks in the backlog (the window included). */
  get count(): number {
    return this.waiting;
  }

  get segments(): Segment[] {
    return this.segmentsList;
  }

  get purgeBound(): number {
    return this.purgedBefore;
  }

  /** Tasks in the window now. */
  get windowSize(): number {
    return this.window.length - this.head;
  }

  openedAt(base: number): number | undefined {
    return this.opened.get(base);
  }

  /** The log opened a partition at `base` (ms `at`). */
  partitionOpened(base: number, at: number): void {
    this.opened.set(base, at);
  }

  snapshot(): BacklogSnapshot {
    const cursor = this.cursor;
    const { range, bucket } = splitPosition(cursor);
    const cursorBase = position(range, bucket, 0);
    return {
      cursor,
      count: this.waiting,
      purgeBound: this.purgedBefore,
      segments: this.segmentsList.filter(s => s.range >= range),
      opened: [...this.opened].filter(([base]) => base >= cursorBase).sort((a, b) => a[0] - b[0]),
    };
  }

  /** The window's tasks, oldest first (read-only views). */
  windowTasks(): Task[] {
    return this.window.slice(this.head);
  }

  /** A ready source was appended: one more waiting task (it joins the window when committed). */
  sourceAppended(): void {
    this.waiting++;
  }

  /** A fetch wants a task from the backlog: the window grows to meet demand. */
  demand(now = Date.now()): void {
    this.lastDemand = now;
    // A window drained to half before its refill came back is too small for the demand.
    if (this.windowSize * 2 < this.target || (this.windowSize === 0 && this.waiting > 0)) {
      this.target = Math.min(this.deps.limits.windowMax, Math.max(MIN_TARGET, this.target * 2));
    }
    this.fill();
  }

  /** The head of the backlog if it is in memory; expired tasks are dropped on the way. */
  peek(now = Date.now()): Task | undefined {
    while (this.head < this.window.length) {
      const t = this.window[this.head]!;
      if (t.expiresAt > now) return t;
      this.dropHead();
    }
    this.compact();
    return undefined;
  }

  /** Takes the head (after peek returned it): it is being delivered. */
  take(now = Date.now()): Task {
    this.lastDemand = now;
    const t = this.dropHead();
    this.compact();
    this.prune();
    if (this.windowSize * 2 < this.target) this.fill();
    return t;
  }

  private dropHead(): Task {
    const t = this.window[this.head++]!;
    this.windowBytes -= bytesOf(t);
    this.waiting = Math.max(0, this.waiting - 1);
    return t;
  }

  private compact(): void {
    if (this.head > 256 && this.head * 2 > this.window.length) {
      this.window = this.window.slice(this.head);
      this.head = 0;
    }
  }

  /** Forgets cancellations and partition times the cursor has passed. */
  private prune(): void {
    const cursor = this.cursor;
    if (this.cancelledAt.size > 0) for (const p of this.cancelledAt) if (p < cursor) this.cancelledAt.delete(p);
    if (this.opened.size > 4) {
      const { range, bucket } = splitPosition(cursor);
      const base = position(range, bucket, 0);
      for (const k of this.opened.keys()) if (k < base) this.opened.delete(k);
    }
  }

  /**
   * A waiting task at `src` was cancelled: gone from the window, and skipped by every later read
   * (its backlog_cancels row is written after the cancel commits; `cancelDurable` says when).
   * Returns the task when it was in the window.
   */
  cancel(src: number): Task | undefined {
    this.cancelledAt.add(src);
    const key = partitionKey(src);
    const p = this.pendingCancels.get(key) ?? { n: 0, waiters: [] };
    p.n++;
    this.pendingCancels.set(key, p);
    this.waiting = Math.max(0, this.waiting - 1);
    for (let i = this.head; i < this.window.length; i++) {
      if (this.window[i]!.src !== src) continue;
      const [t] = this.window.splice(i, 1);
      this.windowBytes -= bytesOf(t!);
      return t;
    }
    return undefined;
  }

  /** The backlog_cancels row of the cancel of `src` is durable. */
  cancelDurable(src: number): void {
    const key = partitionKey(src);
    const p = this.pendingCancels.get(key);
    if (p && --p.n <= 0) {
      this.pendingCancels.delete(key);
      for (const w of p.waiters) w();
    }
    // A partition not read yet learns of it from its rows when its turn comes.
    if (!this.loadedCancels.has(key)) this.cancelledAt.delete(src);
  }

  /** Makes sure a read of the partition holding `at` skips every cancelled source in it. */
  private async loadCancels(at: number): Promise<void> {
    const key = partitionKey(at);
    if (this.loadedCancels.has(key)) return;
    const p = this.pendingCancels.get(key);
    if (p) await new Promise<void>(resolve => p.waiters.push(resolve));
    const { range, bucket } = splitPosition(at);
    for (const c of await this.deps.readCancels({ range, bucket })) if (c >= this.cursor) this.cancelledAt.add(c);
    this.loadedCancels.add(key);
    if (this.loadedCancels.size > 8) this.loadedCancels.delete(this.loadedCancels.values().next().value as string);
  }

  /** Whether a source at `src` may still be waiting in the backlog (the task index's hint says the rest). */
  isWaiting(src: number): boolean {
    if (src < this.purgedBefore || this.cancelledAt.has(src)) return false;
    if (src >= this.readEnd) return true;
    for (let i = this.head; i < this.window.length; i++) if (this.window[i]!.src === src) return true;
    return false;
  }

  /** A window task with this id, if any. */
  find(taskId: string): Task | undefined {
    for (let i = this.head; i < this.window.length; i++) if (this.window[i]!.id === taskId) return this.window[i];
    return undefined;
  }

  /** Everything added before `at` is gone. Returns how many waiting tasks that was. */
  purge(at: number): number {
    const purged = this.waiting;
    this.window = [];
    this.head = 0;
    this.windowBytes = 0;
    this.waiting = 0;
    this.cancelledAt.clear();
    this.purgedBefore = at;
    this.readEnd = Math.max(this.readEnd, at);
    this.headAddedAt = null;
    return purged;
  }

  private hasRoom(): boolean {
    return this.windowSize < this.target && this.windowBytes < this.deps.limits.windowMaxBytes;
  }

  private push(t: Task): void {
    this.window.push(t);
    this.windowBytes += bytesOf(t);
  }

  /**
   * New commits: their ready sources join the window if it has considered everything before them
   * (the frontier is at the batch) and has room; otherwise they stay in the log for a later read.
   */
  committed(events: CommittedEvent[]): void {
    if (events.length === 0 || this.readEnd < events[0]!.at || this.reading) return;
    for (const { at, event } of events) {
      if (at < this.readEnd || !isReadySource(event)) continue;
      if (at < this.purgedBefore || this.cancelledAt.has(at)) continue;
      if (!this.hasRoom()) {
        this.readEnd = at;
        return;
      }
      this.push(taskOfSource(event, at));
    }
    this.readEnd = Math.max(this.readEnd, events[events.length - 1]!.at + 1);
  }

  /** Shrinks an idle window; called periodically. */
  tick(now = Date.now()): void {
    if (this.target > 0 && now - this.lastDemand > IDLE_MS) {
      this.target = 0;
      if (this.windowSize > 0) {
        // The frontier goes back to the head: the window's tasks are read again when asked for.
        this.readEnd = this.window[this.head]!.src;
        this.window = [];
        this.head = 0;
        this.windowBytes = 0;
      }
    }
  }

  /** When the oldest waiting task was added, or undefined; may read its source. */
  async oldestAddedAt(retentionMs: number): Promise<number | undefined> {
    const t = this.peek();
    if (t) return t.expiresAt - retentionMs;
    if (this.waiting === 0) return undefined;
    const cursor = this.cursor;
    if (this.headAddedAt?.cursor === cursor) return this.headAddedAt.at;
    const found = await this.scan(cursor, 1);
    const first = found[0];
    if (!first) return undefined;
    this.headAddedAt = { cursor, at: first.expiresAt - retentionMs };
    return this.headAddedAt.at;
  }

  /**
   * Waiting tasks from the cursor, oldest first, skipping `offset` of them: for listings. Reads the
   * log without touching the window (at most offset + limit sources).
   */
  async list(offset: number, limit: number): Promise<Task[]> {
    const inWindow = this.windowTasks();
    const out = inWindow.slice(offset, offset + limit);
    if (out.length >= limit) return out;
    const skip = Math.max(0, offset - inWindow.length);
    const from = inWindow.length > 0 ? this.readEnd : this.cursor;
    const more = await this.scan(from, skip + limit - out.length);
    return [...out, ...more.slice(skip)];
  }

  /** Up to `n` waiting sources from `from`, read from the log. */
  private async scan(from: number, n: number): Promise<Task[]> {
    const out: Task[] = [];
    let at = from;
    const now = Date.now();
    while (out.length < n) {
      const { events, next, end } = await this.deps.reader.read(at, this.deps.log.committedEnd, Math.max(64, n * 2));
      if (events[0]) await this.loadCancels(events[0].at);
      for (const e of events) {
        if (!isReadySource(e) || e.at < this.purgedBefore || this.cancelledAt.has(e.at) || e.expiresAt <= now) continue;
        out.push(taskOfSource(e, e.at));
        if (out.length >= n) break;
      }
      if (end) break;
      at = next;
    }
    return out;
  }

  /** Starts a page read when the window runs low and more is committed than it has considered. */
  fill(): void {
    if (this.reading || this.windowSize * 2 >= this.target || this.readEnd >= this.deps.log.committedEnd) return;
    // Every waiting task is in the window: nothing to read.
    if (this.waiting <= this.windowSize) return;
    this.reading = this.readPage()
      .catch((err: Error) => this.deps.onReadError(err))
      .finally(() => {
        this.reading = null;
        if (this.windowSize > 0) this.deps.onLoaded();
        if (this.windowSize * 2 < this.target) this.fill();
      });
  }

  /**
   * Resolves when the window holds a task, or nothing more can be read now; false when it returned
   * without reading anything (nothing could be read), true when it read (others may have taken
   * what it read by the time the caller looks).
   */
  async ensure(): Promise<boolean> {
    let read = false;
    for (let i = 0; i < 1000 && this.windowSize === 0; i++) {
      this.fill();
      if (!this.reading) return read;
      await this.reading;
      read = true;
    }
    return true;
  }

  private async readPage(): Promise<void> {
    const from = this.readEnd;
    const before = this.deps.log.committedEnd;
    // About as many rows as the window has room for: the log between sources is mostly sources,
    // and whatever is read beyond the room is read again later.
    const room = Math.max(1, this.target - this.windowSize);
    const { events, next, end } = await this.deps.reader.read(from, before, Math.min(1000, room + 8));
    if (events[0]) await this.loadCancels(events[0].at);
    // The window may have changed meanwhile (a purge, an eviction): then this page is stale.
    if (this.readEnd !== from) return;
    const now = Date.now();
    for (const e of events) {
      if (!isReadySource(e) || e.at < this.purgedBefore || this.cancelledAt.has(e.at)) continue;
      if (e.expiresAt <= now) {
        this.waiting = Math.max(0, this.waiting - 1);
        continue;
      }
      if (!this.hasRoom()) {
        this.readEnd = e.at;
        return;
      }
      this.push(taskOfSource(e, e.at));
    }
    this.readEnd = end ? before : next;
    // Everything committed was read and nothing is being appended: the count is exact again.
    if (end && this.windowSize === 0 && this.readEnd >= this.deps.log.nextPosition) this.waiting = 0;
  }
}
