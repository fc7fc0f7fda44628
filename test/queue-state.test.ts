/**
 * The state machine and recovery without Cassandra (in-memory log and tables):
 * - random workloads: the fold of a checkpoint and the events after it equals the live state, and
 *   the derived rows the fold rewrites equal the live ones (Invariants D and E);
 * - a new owner started from that fold delivers every task that was not acked, cancelled or dead,
 *   each to one worker at a time (G1, G2 in memory);
 * - targeted cases: FIFO across the window, cancels ahead of the window, delayed rows landing behind
 *   the due read position, purge, retried acks.
 */
import { Backlog } from "../lib/queue/backlog";
import type { Snapshot } from "../lib/queue/checkpoint";
import { compareDue } from "../lib/queue/parked";
import { recover } from "../lib/queue/recovery";
import { EventKind, type Delivery, type StoredEvent } from "../lib/queue/task";
import {
  applyDerived,
  cloneTables,
  comparable,
  emptyTables,
  memoryQueue,
  MemoryLog,
  type MemoryQueue,
  type Tables,
} from "./helpers/memory-queue";
import { prng } from "./helpers/prng";

const sealed = (v: unknown) => ({ keyId: "k", blob: Buffer.from(JSON.stringify(v)) });
const valueOf = (d: Delivery | null) => (d ? JSON.parse(d.value.blob.toString()) : null);

let now = Date.UTC(2026, 11, 1, 12, 0, 0);
beforeEach(() => {
  jest.useFakeTimers({ doNotFake: ["queueMicrotask", "setImmediate", "nextTick"] });
  now = Date.UTC(2026, 11, 1, 12, 0, 0);
  jest.setSystemTime(now);
});
afterEach(() => jest.useRealTimers());

function advance(ms: number): void {
  now += ms;
  jest.setSystemTime(now);
}

const expiresAt = () => now + 86_400_000;

function add(q: MemoryQueue, taskId: string, opts: { delayMs?: number; token?: boolean; maxAttempts?: number } = {}) {
  return q.state.add({
    taskId,
    clientId: true,
    value: sealed({ taskId }),
    token: opts.token ? sealed({ wf: taskId }) : undefined,
    expiresAt: expiresAt(),
    notBefore: opts.delayMs ? now + opts.delayMs : undefined,
    maxAttempts: opts.maxAttempts ?? 3,
  });
}

/** The position of the first undelivered source at or after `cursor` (cursors may differ by skipped non-sources). */
function normalizedCursor(
  log: StoredEvent[],
  cursor: number,
  skipped: Set<number>,
  purgeBound: number,
  delivered: Set<number>,
): number {
  for (const e of log) {
    if (e.at < cursor || e.at < purgeBound || skipped.has(e.at) || delivered.has(e.at)) continue;
    const ready = (e.kind === EventKind.Add && e.state !== 2) || (e.kind === EventKind.Carry && e.state === 1);
    if (ready) return e.at;
  }
  return Infinity;
}

function deliveredSources(log: StoredEvent[]): Set<number> {
  const out = new Set<number>();
  for (const e of log) if (e.kind === EventKind.Lease && e.src !== undefined) out.add(e.src);
  return out;
}

function tablesOf(t: Tables): unknown {
  const rows = (m: Map<string, { taskId: string; attempt: number; consumed: boolean; expiresAt: number }>) =>
    [...m].map(([k, r]) => [k, r.taskId, r.attempt, r.consumed]).sort();
  return {
    index: [...t.index].map(([k, e]) => [k, e.seq, e.pos, e.clientId, JSON.stringify(e.hint)]).sort(),
    due: rows(t.due),
    dead: rows(t.dead),
    cancels: [...t.cancels].sort(),
  };
}

interface Run {
  q: MemoryQueue;
  added: Set<string>;
  acked: Map<string, number>;
  cancelled: Set<string>;
  snapshot: Snapshot;
  at: number;
  tablesAtCheckpoint: Tables;
}

/** Random operations by 5 workers, with a checkpoint taken at a random point. */
async function randomRun(seed: number, ops: number, withPurge: boolean): Promise<Run> {
  const rnd = prng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const q = memoryQueue({ windowMax: 4, partSize: 3 });
  const workers = ["w1", "w2", "w3", "w4", "w5"];
  const added = new Set<string>();
  const acked = new Map<string, number>();
  const cancelled = new Set<string>();
  const checkpointAt = Math.floor(rnd() * ops);
  let snapshot: Snapshot | undefined;
  let at = 0;
  let tablesAtCheckpoint = emptyTables();
  let n = 0;
  for (let i = 0; i < ops; i++) {
    if (i === checkpointAt) {
      at = q.log.nextPosition;
      snapshot = structuredClone(q.state.snapshot());
      await q.settle();
      tablesAtCheckpoint = cloneTables(q.tables);
    }
    const r = rnd();
    const w = pick(workers);
    if (r < 0.3) {
      const id = `t${n++}`;
      added.add(id);
      await add(q, id, { delayMs: rnd() < 0.25 ? Math.floor(rnd() * 120_000) + 1 : 0, token: rnd() < 0.3 });
    } else if (r < 0.55) {
      await q.state.fetch(w, Math.floor(rnd() * 20_000) + 1000);
    } else if (r < 0.7) {
      const out = await q.state.ack(w, undefined, rnd() < 0.2, async t => sealed({ result: t.id }));
      if (out.ok) acked.set(out.taskId, (acked.get(out.taskId) ?? 0) + 1);
    } else if (r < 0.78) {
      await q.state.release(w, undefined, rnd() < 0.5 ? 0 : Math.floor(rnd() * 90_000), async () => sealed("err"));
    } else if (r < 0.82) {
      await q.state.update(w, undefined, async () => sealed("progress"));
    } else if (r < 0.86 && added.size > 0) {
      const id = pick([...added]);
      const out = await q.state.cancel(id, async t => sealed({ cancelled: t.id }));
      // A running task is only flagged; it ends when its worker lets go: either way it is cancelled.
      if (out.ok) cancelled.add(id);
    } else if (r < 0.88) {
      await q.state.redrive();
    } else if (withPurge && r < 0.885) {
      await q.state.purge();
    } else {
      advance(Math.floor(rnd() * 30_000));
      q.parked.refill();
      await q.parked.settle();
    }
    await q.settle();
  }
  await q.settle();
  if (!snapshot) {
    at = q.log.nextPosition;
    snapshot = structuredClone(q.state.snapshot());
    tablesAtCheckpoint = cloneTables(q.tables);
  }
  return { q, added, acked, cancelled, snapshot, at, tablesAtCheckpoint };
}

function recoveredAsSnapshot(r: ReturnType<typeof recover>): Snapshot {
  return {
    nextSeq: r.nextSeq,
    backlog: r.backlog,
    parked: r.parked,
    inflight: [...r.inflight.values()],
    lastAcked: [...r.lastAcked],
    completions: r.completions,
  };
}

/** More seeds for a local soak: QUEUE_STATE_SEEDS=500 npx jest test/queue-state.test.ts */
const SEEDS = Number(process.env.QUEUE_STATE_SEEDS ?? 40);

describe("recovery equals the live state", () => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    test(`random workload, seed ${seed}`, async () => {
      const run = await randomRun(seed, 250, seed % 4 === 0);
      const { q } = run;
      const tail = q.log.events.filter(e => e.at >= run.at);
      const recovered = recover(run.snapshot, tail);
      const live = q.state.snapshot();
      const fromFold = recoveredAsSnapshot(recovered);

      // Backlog cursors may stop at different non-source positions: compare the next undelivered source.
      const delivered = deliveredSources(q.log.events);
      const purge = live.backlog.purgeBound;
      const norm = (c: number) => normalizedCursor(q.log.events, c, q.tables.cancels, purge, delivered);
      expect(norm(fromFold.backlog.cursor)).toBe(norm(live.backlog.cursor));
      // The live due cursor may also have passed rows consumed out of order, which the fold reads again.
      const liveDue = live.parked.dueCursor;
      const foldDue = fromFold.parked.dueCursor;
      if (foldDue && liveDue && compareDue(foldDue, liveDue) !== 0) {
        expect(compareDue(foldDue, liveDue)).toBeLessThan(0);
        const skipped = [...q.tables.due.values()].filter(r => {
          const k = { minute: r.slot, part: r.part, dueAt: r.dueAt, pos: r.pos };
          return compareDue(k, foldDue) > 0 && compareDue(k, liveDue) <= 0;
        });
        expect(skipped.filter(r => !r.consumed && r.pos >= purge)).toEqual([]);
      }
      const strip = (s: Snapshot) => {
        const c = comparable(s) as { backlog: object; parked: object };
        return { ...c, backlog: { ...c.backlog, cursor: 0 }, parked: { ...c.parked, dueCursor: null } };
      };
      expect(strip(fromFold)).toEqual(strip(live));
      const returnedOrder = (s: Snapshot) => s.inflight.filter(t => t.state === "ready").map(t => t.id);
      expect(returnedOrder(fromFold)).toEqual(returnedOrder(live));

      // The rows the takeover rewrites, applied on the tables as they were at the checkpoint, give the live tables.
      const tables = cloneTables(run.tablesAtCheckpoint);
      for (const w of recovered.redo) applyDerived(tables, q.log, w);
      expect(tablesOf(tables)).toEqual(tablesOf(q.tables));
    });
  }
});

describe("a new owner continues from the fold", () => {
  for (let seed = 1000; seed < 1000 + Math.ceil(SEEDS * 0.65); seed++) {
    test(`no task lost or held twice, seed ${seed}`, async () => {
      const run = await randomRun(seed, 200, false);
      const { q } = run;
      const recovered = recover(
        run.snapshot,
        q.log.events.filter(e => e.at >= run.at),
      );
      const tables = cloneTables(run.tablesAtCheckpoint);
      for (const w of recovered.redo) applyDerived(tables, q.log, w);
      // The new owner writes a new range; it reads the old range's sources through the same log.
      const log = new MemoryLog(2);
      log.events.push(...q.log.events);
      const next = memoryQueue({ windowMax: 4, partSize: 3, recovered, log, tables });

      // Drain: every lease runs out, every delayed task falls due, dead ones are counted.
      advance(200_000);
      const holders = new Map<string, string>();
      for (let round = 0; round < 2000; round++) {
        next.parked.refill();
        await next.parked.settle();
        const worker = `drain-${round % 3}`;
        const d = await next.state.fetch(worker, 60_000);
        await next.settle();
        if (!d) {
          if (next.state.inFlightTasks().some(t => t.state === "leased") || next.parked.delayedCount > 0) {
            advance(61_000);
            continue;
          }
          break;
        }
        const holder = holders.get(d.taskId);
        expect(holder === undefined || holder === worker).toBe(true);
        holders.set(d.taskId, worker);
        const out = await next.state.ack(worker, d.taskId, false, async t => sealed({ result: t.id }));
        await next.settle();
        expect(out.ok).toBe(true);
        holders.delete(d.taskId);
        run.acked.set(d.taskId, (run.acked.get(d.taskId) ?? 0) + 1);
      }
      const dead = new Set([...next.tables.dead.values()].filter(r => !r.consumed).map(r => r.taskId));
      const lost = [...run.added].filter(id => !run.acked.has(id) && !run.cancelled.has(id) && !dead.has(id));
      if (lost.length > 0 && process.env.DEBUG_LOST) {
        for (const id of lost) {
          console.log(
            id,
            q.log.events
              .filter(e => e.taskId === id)
              .map(e => ({
                ...e,
                value: undefined,
                token: undefined,
                result: undefined,
                error: undefined,
                progress: undefined,
              })),
          );
          console.log(
            "checkpoint at",
            run.at,
            "index",
            q.tables.index.get(id),
            "next index",
            next.tables.index.get(id),
          );
          console.log(
            "due rows",
            [...next.tables.due.values()].filter(r => r.taskId === id).map(r => ({ ...r, body: undefined })),
          );
          console.log(
            "in snapshot",
            run.snapshot.inflight.find(t => t.id === id),
            "recovered",
            recovered.inflight.get(id),
          );
        }
      }
      expect(lost).toEqual([]);
      expect([...run.acked].filter(([, n]) => n > 1).map(([id]) => id)).toEqual([]);
    });
  }
});

describe("targeted cases", () => {
  test("the backlog is delivered first in, first out through a window smaller than it", async () => {
    const q = memoryQueue({ windowMax: 4 });
    for (let i = 0; i < 30; i++) await add(q, `t${i}`);
    const got: string[] = [];
    for (let i = 0; i < 30; i++) {
      const d = await q.state.fetch("w", 60_000);
      got.push(valueOf(d).taskId);
      await q.state.ack("w", undefined, false, async () => sealed(null));
    }
    expect(got).toEqual(Array.from({ length: 30 }, (_, i) => `t${i}`));
    expect(q.backlog.windowSize).toBeLessThanOrEqual(16);
    expect(await q.state.fetch("w", 60_000)).toBeNull();
  });

  test("a task that ends, is given back or is handed over leaves the lease deadlines at once", async () => {
    const q = memoryQueue({ windowMax: 4 });
    for (let i = 0; i < 40; i++) await add(q, `t${i}`, { token: i % 4 === 0 });
    // Leases of 60 s, each acked long before its deadline: none of them may stay in the heap.
    for (let round = 0; round < 8; round++) {
      const got = await Promise.all(Array.from({ length: 4 }, (_, w) => q.state.fetch(`w${w}`, 60_000)));
      expect(got.filter(d => d !== null)).toHaveLength(4);
      expect(q.state.leaseDeadlines).toBe(4);
      await q.state.ack("w0", undefined, false, async t => sealed({ result: t.id }));
      await q.state.ack("w1", undefined, true, async t => sealed({ failed: t.id }));
      await q.state.release("w2", undefined, 0, undefined);
      await q.state.ack("w3", undefined, false, async t => sealed({ result: t.id }));
      expect(q.state.leaseDeadlines).toBe(0);
      advance(10);
    }
    // A lease that runs out is claimed again by the next fetch: one deadline, the new one.
    const held = await q.state.fetch("slow", 1_000);
    expect(held).not.toBeNull();
    advance(2_000);
    const again = await q.state.fetch("next", 60_000);
    expect(again?.taskId).toBe(held!.taskId);
    expect(q.state.leaseDeadlines).toBe(1);
    await q.state.ack("next", undefined, false, async t => sealed({ result: t.id }));
    expect(q.state.leaseDeadlines).toBe(0);
  });

  test("more concurrent fetches than the window holds all get a task while the backlog has more", async () => {
    const q = memoryQueue({ windowMax: 4 });
    for (let i = 0; i < 40; i++) await add(q, `t${i}`);
    // 20 workers at once, the window holding at most 4: a fetch that loses the race for a page
    // must wait for the next one, not answer "empty" (a worker without a long poll would stop).
    const got = await Promise.all(Array.from({ length: 20 }, (_, w) => q.state.fetch(`w${w}`, 60_000)));
    expect(got.filter(d => d === null)).toHaveLength(0);
    expect(new Set(got.map(d => valueOf(d).taskId)).size).toBe(20);
    const rest = await Promise.all(Array.from({ length: 30 }, (_, w) => q.state.fetch(`v${w}`, 60_000)));
    expect(rest.filter(d => d !== null)).toHaveLength(20);
  });

  test("a task cancelled far ahead of the window is never delivered, before and after a takeover", async () => {
    const q = memoryQueue({ windowMax: 2 });
    for (let i = 0; i < 20; i++) await add(q, `t${i}`);
    await q.state.fetch("w", 60_000);
    await q.state.ack("w", undefined, false, async () => sealed(null));
    expect(await q.state.cancel("t15", async () => sealed(null))).toMatchObject({ ok: true, state: "cancelled" });
    await q.settle();
    const at = q.log.nextPosition;
    const snapshot = q.state.snapshot();
    const recovered = recover(
      snapshot,
      q.log.events.filter(e => e.at >= at),
    );
    const log = new MemoryLog(2);
    log.events.push(...q.log.events);
    const next = memoryQueue({ windowMax: 2, recovered, log, tables: cloneTables(q.tables) });
    for (const owner of [q, next]) {
      const got: string[] = [];
      for (;;) {
        const d = await owner.state.fetch("w", 60_000);
        if (!d) break;
        got.push(valueOf(d).taskId);
        await owner.state.ack("w", undefined, false, async () => sealed(null));
      }
      expect(got).toEqual(Array.from({ length: 19 }, (_, i) => `t${i + 1}`).filter(id => id !== "t15"));
    }
  });

  test("a delayed task whose row lands behind the due read position is still delivered", async () => {
    const q = memoryQueue({ windowMax: 2, partSize: 100 });
    const minute = Math.floor(now / 60_000) * 60_000 + 60_000;
    advance(minute - now);
    // Three tasks due late in this minute fill the due window (2 rows read)...
    for (const [id, at] of [
      ["a", 50_000],
      ["b", 52_000],
      ["c", 54_000],
    ] as const)
      await add(q, id, { delayMs: at });
    await q.settle();
    advance(10_000);
    q.parked.refill();
    await q.parked.settle();
    // ...then one due sooner, at a place the read has passed.
    await add(q, "early", { delayMs: 5_000 });
    await q.settle();
    advance(6_000);
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "early" });
  });

  test("purge removes waiting, delayed and dead tasks; running ones go on", async () => {
    const q = memoryQueue();
    await add(q, "running");
    await q.state.fetch("w", 600_000);
    await add(q, "waiting");
    await add(q, "later", { delayMs: 30_000 });
    await add(q, "doomed", { maxAttempts: 1 });
    await q.state.fetch("x", 60_000);
    await q.state.release("x", undefined, 0, undefined);
    await q.settle();
    expect(await q.state.purge()).toBe(3);
    await add(q, "after");
    advance(60_000);
    const got: string[] = [];
    for (;;) {
      const d = await q.state.fetch("y", 60_000);
      if (!d) break;
      got.push(valueOf(d).taskId);
      await q.state.ack("y", undefined, false, async () => sealed(null));
    }
    expect(got).toEqual(["after"]);
    expect(await q.state.ack("w", undefined, false, async () => sealed(null))).toMatchObject({
      ok: true,
      taskId: "running",
    });
  });

  test("a retried ack with the task id answers true; an ack after the task went elsewhere says LEASE_LOST", async () => {
    const q = memoryQueue();
    await add(q, "t1");
    await add(q, "t2");
    expect(valueOf(await q.state.fetch("w1", 1000))).toEqual({ taskId: "t1" });
    advance(1500);
    expect(valueOf(await q.state.fetch("w2", 1000))).toEqual({ taskId: "t1" });
    expect(await q.state.ack("w1", "t1", false, async () => sealed(null))).toEqual({
      ok: false,
      reason: "LEASE_LOST",
      taskId: "t1",
    });
    expect(await q.state.ack("w2", "t1", false, async () => sealed(null))).toEqual({ ok: true, taskId: "t1" });
    expect(await q.state.ack("w2", "t1", false, async () => sealed(null))).toEqual({ ok: true, taskId: "t1" });
  });

  test("ackThenFetch commits the ack and the next lease together, and answers the next task", async () => {
    const q = memoryQueue();
    await add(q, "t1");
    await add(q, "t2");
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "t1" });
    const flushes = q.log.flushes.length;
    const r = await q.state.ackThenFetch("w", "t1", false, async () => sealed(null), 60_000);
    expect(r).toMatchObject({ ok: true, taskId: "t1" });
    expect(valueOf(r.next ?? null)).toEqual({ taskId: "t2" });
    expect(q.log.flushes.slice(flushes)).toEqual([[EventKind.Ack, EventKind.Lease]]);
    expect((await q.state.status("t1")).state).toBe("done");
    // The worker holds t2 now: a fetch gives it again; a retried ack of t1 still says ok.
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "t2" });
    expect(await q.state.ack("w", "t1", false, async () => sealed(null))).toEqual({ ok: true, taskId: "t1" });
    // The last task: next is null; a refused ack (nothing held) still looks for a task.
    const last = await q.state.ackThenFetch("w", "t2", false, async () => sealed(null), 60_000);
    expect(last).toEqual({ ok: true, taskId: "t2", next: null });
    await add(q, "t3");
    const refused = await q.state.ackThenFetch("w", "t9", false, async () => sealed(null), 60_000);
    expect(refused).toMatchObject({ ok: false, reason: "NO_TASK" });
    expect(valueOf(refused.next ?? null)).toEqual({ taskId: "t3" });
    // Without the task id a retry could ack the task the first attempt took: refused.
    await expect(q.state.ackThenFetch("w", undefined, false, async () => sealed(null), 60_000)).rejects.toThrow(
      /needs the id/,
    );
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "t3" });
  });

  test("an idle window is emptied and read back in order when workers return", async () => {
    const q = memoryQueue({ windowMax: 8 });
    for (let i = 0; i < 6; i++) await add(q, `t${i}`);
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "t0" });
    await q.state.ack("w", undefined, false, async () => sealed(null));
    expect(q.backlog.windowSize).toBeGreaterThan(0);
    advance(11_000);
    q.state.dropExpired();
    expect(q.backlog.windowSize).toBe(0);
    expect(q.backlog.count).toBe(5);
    expect(valueOf(await q.state.fetch("w", 60_000))).toEqual({ taskId: "t1" });
  });

  test("Backlog.committed does not move the frontier back", () => {
    const b = new Backlog(
      { cursor: 0, count: 0, purgeBound: 0, segments: [], opened: [] },
      {
        reader: { read: async () => ({ events: [], next: 0, end: true }) },
        log: { committedEnd: 100, nextPosition: 100 },
        limits: { windowMax: 4, windowMaxBytes: 1 << 20 },
        readCancels: async () => [],
        onReadError: () => undefined,
        onLoaded: () => undefined,
      },
    );
    b.purge(50);
    b.committed([{ at: 10, event: { kind: EventKind.Add, taskId: "x", seq: 1, state: 1, expiresAt: now + 1000 } }]);
    expect(b.cursor).toBe(50);
  });
});
