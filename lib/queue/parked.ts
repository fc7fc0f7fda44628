/**
 * Delayed and dead tasks: they live in their own tables (queue_due by due minute, queue_dead by the
 * hour they died), written as derived rows after the event that parked them is committed. The owner
 * keeps only counts per minute / hour, the due cursor, and a window of the delayed tasks of the
 * minute now due. See docs/ARCHITECTURE.md, "Delayed and dead tasks".
 */
import type { DueKey, ParkedSnapshot, SlotCount } from "./checkpoint";
import { HOUR_MS, MINUTE_MS, minuteOf } from "./recovery";
import type { ParkedTask } from "./task";

export interface ParkedReader {
  readDue(
    minute: number,
    part: number,
    after: { dueAt: number; pos: number } | null,
    limit: number,
  ): Promise<{ rows: ParkedTask[]; done: boolean }>;
  readDead(
    hour: number,
    part: number,
    afterPos: number | null,
    limit: number,
  ): Promise<{ rows: ParkedTask[]; done: boolean }>;
}

export interface ParkedLimits {
  windowMax: number;
  partSize: number;
}

/** Lexicographic order of due keys: minute, part, due time, position. */
export function compareDue(a: DueKey, b: DueKey): number {
  return a.minute - b.minute || a.part - b.part || a.dueAt - b.dueAt || a.pos - b.pos;
}

const keyOf = (t: ParkedTask): DueKey => ({ minute: t.slot, part: t.part, dueAt: t.dueAt, pos: t.pos });

/** Load the next due minute this long before it starts, so its first tasks go out on time. */
const DUE_LOOKAHEAD_MS = 2000;

class SlotCounts {
  private readonly map = new Map<number, SlotCount>();

  constructor(list: SlotCount[]) {
    for (const s of list) this.map.set(s.slot, { ...s });
  }

  get total(): number {
    let n = 0;
    for (const s of this.map.values()) n += s.count;
    return n;
  }

  /** One more row in the slot: its part. */
  add(slot: number, partSize: number): number {
    const s = this.map.get(slot) ?? { slot, written: 0, count: 0 };
    this.map.set(slot, s);
    const part = Math.floor(s.written / partSize);
    s.written++;
    s.count++;
    return part;
  }

  remove(slot: number): void {
    const s = this.map.get(slot);
    if (s) s.count = Math.max(0, s.count - 1);
  }

  get(slot: number): SlotCount | undefined {
    return this.map.get(slot);
  }

  parts(slot: number, partSize: number): number {
    const s = this.map.get(slot);
    return s ? Math.ceil(s.written / partSize) : 0;
  }

  /** Slots holding live rows, oldest first. */
  live(): number[] {
    return [...this.map.values()]
      .filter(s => s.count > 0)
      .map(s => s.slot)
      .sort((a, b) => a - b);
  }

  zeroAll(): void {
    for (const s of this.map.values()) s.count = 0;
  }

  /** Forgets empty slots that can get no more rows (their time is past). */
  prune(before: number): void {
    for (const [slot, s] of this.map) if (s.count === 0 && slot < before) this.map.delete(slot);
  }

  /** Forgets slots whose every row has expired (slots grouped by expiry hour). */
  expire(before: number): void {
    for (const [slot] of this.map) if (slot < before) this.map.delete(slot);
  }

  list(): SlotCount[] {
    return [...this.map.values()].sort((a, b) => a.slot - b.slot).map(s => ({ ...s }));
  }
}

export class Parked {
  private readonly due: SlotCounts;
  private readonly dead: SlotCounts;
  private cursor: DueKey | null;
  /** Delayed tasks of the partition being delivered, in due order. */
  private window: ParkedTask[] = [];
  private loaded: { minute: number; part: number; last: DueKey | null; complete: boolean } | null = null;
  private loading: Promise<void> | null = null;
  private purgedBefore = 0;
  /** Parked rows consumed by an event whose mark may not be durable yet (so no second event takes them). */
  private readonly consumed = new Set<number>();
  /** Rows parked whose row is not durable yet, per partition: a read of it waits for them. */
  private readonly unsettled = new Map<string, { n: number; waiters: (() => void)[] }>();

  constructor(
    snapshot: ParkedSnapshot,
    private readonly reader: ParkedReader,
    private readonly limits: ParkedLimits,
    private readonly onReadError: (err: Error) => void,
    /** Delayed tasks were loaded: waiting fetches may find one due. */
    private readonly onLoaded: () => void = () => undefined,
    private readonly warn: (message: string) => void = () => undefined,
  ) {
    this.due = new SlotCounts(snapshot.due);
    this.dead = new SlotCounts(snapshot.dead);
    this.cursor = snapshot.dueCursor;
  }

  setPurgeBound(at: number): void {
    this.purgedBefore = at;
  }

  get delayedCount(): number {
    return this.due.total;
  }

  get deadCount(): number {
    return this.dead.total;
  }

  get dueCursor(): DueKey | null {
    return this.cursor;
  }

  snapshot(): ParkedSnapshot {
    return { dueCursor: this.cursor, due: this.due.list(), dead: this.dead.list() };
  }

  /**
   * The earliest due time a new delayed row may have: a row due at or before it would sort before
   * the cursor, so such a task is ready now instead.
   */
  dueFloor(now: number): number {
    return Math.max(now, this.cursor?.dueAt ?? 0);
  }

  /** A task is being delayed until `dueAt`: the part its row goes to (the row is written after commit). */
  parkDue(dueAt: number): { minute: number; part: number } {
    const minute = minuteOf(dueAt);
    const part = this.due.add(minute, this.limits.partSize);
    this.unsettle("due", minute, part);
    return { minute, part };
  }

  /** A task died; its retention ends at `expiresAt` (ms): the hour and part of its row. */
  parkDead(expiresAt: number): { hour: number; part: number } {
    const at = expiresAt;
    const hour = Math.floor(at / HOUR_MS) * HOUR_MS;
    const part = this.dead.add(hour, this.limits.partSize);
    this.unsettle("dead", hour, part);
    return { hour, part };
  }

  private unsettle(table: "due" | "dead", slot: number, part: number): void {
    const key = `${table}:${slot}:${part}`;
    const u = this.unsettled.get(key) ?? { n: 0, waiters: [] };
    u.n++;
    this.unsettled.set(key, u);
  }

  /** Resolves when every row parked so far in that partition is durable. */
  private settled(table: "due" | "dead", slot: number, part: number): Promise<void> {
    const u = this.unsettled.get(`${table}:${slot}:${part}`);
    if (!u || u.n === 0) return Promise.resolve();
    return new Promise(resolve => u.waiters.push(resolve));
  }

  /** Resolves when every row parked so far in that partition is durable (for reads of one row). */
  whenDurable(table: "due" | "dead", slot: number, part: number): Promise<void> {
    return this.settled(table, slot, part);
  }

  private pendingIn(table: "due" | "dead", slot: number, part: number): number {
    return this.unsettled.get(`${table}:${slot}:${part}`)?.n ?? 0;
  }

  /** A parked row is durable: reads of its partition may go ahead; a due row joins the due window when it belongs there. */
  rowDurable(table: "due" | "dead", row: ParkedTask): void {
    const key = `${table}:${row.slot}:${row.part}`;
    const u = this.unsettled.get(key);
    if (u) {
      u.n--;
      if (u.n <= 0) {
        this.unsettled.delete(key);
        for (const w of u.waiters) w();
      }
    }
    if (table === "due") this.joinWindow(row);
  }

  private joinWindow(row: ParkedTask): void {
    const l = this.loaded;
    if (!l || row.slot !== l.minute || row.part !== l.part) return;
    const key = keyOf(row);
    if (this.cursor && compareDue(key, this.cursor) <= 0) return;
    if (!l.complete && l.last && compareDue(key, l.last) > 0) return;
    if (this.window.some(t => t.pos === row.pos)) return;
    const i = this.window.findIndex(t => compareDue(keyOf(t), key) > 0);
    if (i < 0) this.window.push(row);
    else this.window.splice(i, 0, row);
  }

  /** When the next delayed task is due (or its minute starts), for wake-up timers. */
  nextDueAt(): number | undefined {
    const first = this.window[0];
    if (first) return first.dueAt;
    const minute = this.due.live()[0];
    return minute === undefined ? undefined : Math.max(minute - DUE_LOOKAHEAD_MS, 0);
  }

  /** Delayed tasks due by `now`, in memory. */
  dueNow(now: number): number {
    let n = 0;
    for (const t of this.window) if (t.dueAt <= now) n++;
    return n;
  }

  /** The next delayed task due by `now`, removed from the window (the caller commits its delivery). */
  takeDue(now: number): ParkedTask | undefined {
    while (this.window.length > 0) {
      const t = this.window[0]!;
      if (t.dueAt > now) return undefined;
      this.window.shift();
      this.cursor = keyOf(t);
      if (t.consumed || this.consumed.has(t.pos) || t.pos < this.purgedBefore) continue;
      this.due.remove(t.slot);
      if (t.expiresAt <= now) continue;
      return t;
    }
    this.refill(now);
    return undefined;
  }

  /** Loads the next due partition when its time has come and nothing of it is in memory. */
  refill(now = Date.now()): void {
    // Dead rows are grouped by the hour their tasks expire: a past hour holds nothing live.
    this.dead.expire(now - HOUR_MS);
    if (this.loading || this.window.length > 0) return;
    this.loading = this.load(now)
      .then(() => {
        if (this.window.length > 0) this.onLoaded();
      })
      .catch((err: Error) => this.onReadError(err))
      .finally(() => {
        this.loading = null;
      });
  }

  /** Resolves when a refill in progress is done. */
  async settle(): Promise<void> {
    if (this.loading) await this.loading;
  }

  private async load(now: number): Promise<void> {
    for (let guard = 0; guard < 100_000; guard++) {
      const minute = this.due.live()[0];
      if (minute === undefined || minute - DUE_LOOKAHEAD_MS > now) return;
      // Within the minute: after the cursor when it is there, else from the start of part 0.
      const c = this.cursor;
      const part = c && c.minute === minute ? c.part : 0;
      const after = c && c.minute === minute ? { dueAt: c.dueAt, pos: c.pos } : null;
      const parts = Math.max(1, this.due.parts(minute, this.limits.partSize));
      await this.settled("due", minute, part);
      const { rows, done } = await this.reader.readDue(minute, part, after, this.limits.windowMax);
      const last = rows.length > 0 ? keyOf(rows[rows.length - 1]!) : null;
      this.loaded = { minute, part, last, complete: done };
      let live = 0;
      for (const r of rows) {
        if (r.consumed || this.consumed.has(r.pos) || r.pos < this.purgedBefore) {
          // Consumed out of order (its count already went): the cursor simply passes it.
          if (this.window.length === 0) this.cursor = keyOf(r);
          continue;
        }
        this.joinWindow(r);
        live++;
      }
      if (live > 0) return;
      if (!done) continue;
      if (part + 1 < parts) {
        // A part before the last is full and gets no more rows: move to the next one.
        this.cursor = { minute, part: part + 1, dueAt: Number.MIN_SAFE_INTEGER, pos: -1 };
        this.loaded = null;
        continue;
      }
      if (this.pendingIn("due", minute, part) > 0) continue;
      const left = this.due.get(minute)?.count ?? 0;
      if (left > 0) {
        this.warn(`due minute ${new Date(minute).toISOString()}: ${left} delayed tasks counted but none left to read`);
        this.due.get(minute)!.count = 0;
      }
      this.loaded = null;
      this.due.prune(minuteOf(now) - MINUTE_MS);
    }
  }

  /** A delayed task's row is consumed out of order (cancel). */
  cancelDue(minute: number, pos: number): ParkedTask | undefined {
    this.consumed.add(pos);
    this.due.remove(minute);
    const i = this.window.findIndex(t => t.pos === pos);
    return i < 0 ? undefined : this.window.splice(i, 1)[0];
  }

  /** A dead row is consumed (redrive or cancel). */
  consumeDead(hour: number, pos: number): void {
    this.consumed.add(pos);
    this.dead.remove(hour);
  }

  /** Whether a delayed task's row is still to be delivered (not consumed, not passed by the cursor). */
  isDueWaiting(key: { slot: number; part: number; dueAt: number; pos: number }): boolean {
    if (this.isConsumed(key.pos)) return false;
    const k = { minute: key.slot, part: key.part, dueAt: key.dueAt, pos: key.pos };
    return !this.cursor || compareDue(k, this.cursor) > 0;
  }

  /** Whether a parked row's consuming event has already been appended. */
  isConsumed(pos: number): boolean {
    return this.consumed.has(pos) || pos < this.purgedBefore;
  }

  /** The mark of a consumed row is durable: reads see it from now on. */
  markDurable(pos: number): void {
    this.consumed.delete(pos);
  }

  purge(at: number): { delayed: number; dead: number } {
    const counts = { delayed: this.due.total, dead: this.dead.total };
    this.due.zeroAll();
    this.dead.zeroAll();
    this.window = [];
    this.loaded = null;
    this.purgedBefore = at;
    return counts;
  }

  /** The delayed tasks in memory (for listings). */
  dueWindow(): ParkedTask[] {
    return [...this.window];
  }

  /** Live rows of a parked table, oldest slot first, skipping `offset` of them. */
  async list(table: "due" | "dead", offset: number, limit: number): Promise<ParkedTask[]> {
    const counts = table === "due" ? this.due : this.dead;
    const out: ParkedTask[] = [];
    let skip = offset;
    const now = Date.now();
    for (const slot of counts.live()) {
      const parts = counts.parts(slot, this.limits.partSize);
      for (let part = 0; part < parts; part++) {
        await this.settled(table, slot, part);
        let after: { dueAt: number; pos: number } | null = null;
        for (;;) {
          const page: { rows: ParkedTask[]; done: boolean } =
            table === "due"
              ? await this.reader.readDue(slot, part, after, 500)
              : await this.reader.readDead(slot, part, after?.pos ?? null, 500);
          for (const r of page.rows) {
            after = { dueAt: r.dueAt, pos: r.pos };
            if (r.consumed || this.isConsumed(r.pos) || r.expiresAt <= now) continue;
            if (table === "due" && this.cursor && compareDue(keyOf(r), this.cursor) <= 0) continue;
            if (skip > 0) {
              skip--;
              continue;
            }
            out.push(r);
            if (out.length >= limit) return out;
          }
          if (page.done || page.rows.length === 0) break;
        }
      }
    }
    return out;
  }
}
