/**
 * The commit pipeline of EventLog without Cassandra: a fake store whose writes and fence reads the
 * test completes by hand. Batches commit in log order after a fence read that started once they
 * had completed; a failed write fails everything after it; fence reads wait out a rollover; a
 * failing commit listener fails the log instead of leaving callers hanging. With a fence lease, a
 * read runs beside the write and commits the batches that complete within the lease after its
 * start, and no others.
 */
import { QueueEngine } from "../lib/queue/engine";
import { EventLog } from "../lib/queue/event-log";
import type { OwnerLease } from "../lib/queue/owner-lease";
import { decodeLogState, UNREADABLE_FENCE_LEASE_MS, type QueueStore } from "../lib/queue/store";
import { EventKind, position, splitPosition, type BucketRef, type LogEvent } from "../lib/queue/task";

interface Deferred {
  resolve: () => void;
  reject: (err: Error) => void;
}

class FakeStore {
  writes: { ref: BucketRef; first: number; n: number; d: Deferred }[] = [];
  reads: { ref: BucketRef; answer: (sealed: boolean) => void; fail: (err: Error) => void }[] = [];
  created: BucketRef[] = [];

  appendEvents(_q: string, ref: BucketRef, first: number, events: LogEvent[]): Promise<void> {
    return new Promise((resolve, reject) => this.writes.push({ ref, first, n: events.length, d: { resolve, reject } }));
  }
  isSealed(_q: string, ref: BucketRef): Promise<boolean> {
    return new Promise((answer, fail) => this.reads.push({ ref, answer, fail }));
  }
  createBucket(_q: string, ref: BucketRef): Promise<boolean> {
    this.created.push(ref);
    return Promise.resolve(true);
  }
}

class FakeLease {
  readonly queue = "o/q";
  readonly rangeId = 3;
  partitions: { ref: BucketRef; done: () => void }[] = [];
  addPartition(ref: BucketRef): Promise<void> {
    return new Promise(done => this.partitions.push({ ref, done }));
  }
}

const turn = () => new Promise(r => setImmediate(r));
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await turn();
}

const ev = (n: number): LogEvent => ({ kind: EventKind.Add, taskId: `t${n}`, expiresAt: Date.now() + 60_000 });

function setup(
  opts: { bucketSize?: number; maxBatchEvents?: number; commitDepth?: number; fenceLeaseMs?: number } = {},
) {
  const store = new FakeStore();
  const lease = new FakeLease();
  const failures: string[] = [];
  const log = new EventLog(
    store as unknown as QueueStore,
    lease as unknown as OwnerLease,
    {
      bucketSize: opts.bucketSize ?? 100,
      maxBatchEvents: opts.maxBatchEvents ?? 2,
      maxBatchBytes: 1 << 20,
      commitDepth: opts.commitDepth ?? 2,
      fenceLeaseMs: opts.fenceLeaseMs ?? 0,
    },
    { range: 3, bucket: 0 },
    reason => failures.push(reason),
  );
  const committed: number[] = [];
  log.onCommitted(events => committed.push(...events.map(e => splitPosition(e.at).pos)));
  return { store, lease, log, failures, committed };
}

/** Appends n events; returns their settle order. */
function appendAll(log: EventLog, n: number, from = 0) {
  const outcome: string[] = [];
  const done = Array.from({ length: n }, (_, i) => {
    const { committed } = log.append(ev(from + i));
    return committed.then(
      () => void outcome.push(`ok ${from + i}`),
      () => void outcome.push(`failed ${from + i}`),
    );
  });
  return { outcome, all: Promise.all(done) };
}

test("batches in flight up to the depth, committed in log order after a fence read started once they completed", async () => {
  const { store, log, committed } = setup();
  const { outcome, all } = appendAll(log, 6);
  await settle();
  // Three batches of two are pending; two are written at once.
  expect(store.writes.map(w => [w.first, w.n])).toEqual([
    [0, 2],
    [2, 2],
  ]);
  // The second completes first: nothing is committed, but a fence read may start (for nothing).
  store.writes[1]!.d.resolve();
  await settle();
  expect(store.reads.length).toBe(0);
  store.writes[0]!.d.resolve();
  await settle();
  expect(store.reads.length).toBe(1);
  expect(committed).toEqual([]);
  store.reads[0]!.answer(false);
  await settle();
  expect(committed).toEqual([0, 1, 2, 3]);
  expect(log.committedEnd).toBe(position(3, 0, 4));
  // The third batch went out once there was room.
  expect(store.writes.map(w => w.first)).toEqual([0, 2, 4]);
  store.writes[2]!.d.resolve();
  await settle();
  // A batch that completed during a read waits for the next read.
  store.reads[1]!.answer(false);
  await all;
  expect(committed).toEqual([0, 1, 2, 3, 4, 5]);
  expect(outcome).toEqual(["ok 0", "ok 1", "ok 2", "ok 3", "ok 4", "ok 5"]);
});

test("a batch completed while the fence read ran is not committed by that read", async () => {
  const { store, log, committed } = setup();
  appendAll(log, 4);
  await settle();
  store.writes[0]!.d.resolve();
  await settle();
  expect(store.reads.length).toBe(1);
  store.writes[1]!.d.resolve();
  await settle();
  store.reads[0]!.answer(false);
  await settle();
  expect(committed).toEqual([0, 1]);
  expect(store.reads.length).toBe(2);
  store.reads[1]!.answer(false);
  await settle();
  expect(committed).toEqual([0, 1, 2, 3]);
});

test("a failed write fails every event after it, also those whose batches landed; the log is done", async () => {
  const { store, log, committed, failures } = setup();
  const { outcome, all } = appendAll(log, 4);
  await settle();
  store.writes[1]!.d.resolve();
  await settle();
  store.writes[0]!.d.reject(new Error("write timed out"));
  await all;
  expect(committed).toEqual([]);
  expect(outcome.sort()).toEqual(["failed 0", "failed 1", "failed 2", "failed 3"]);
  expect(failures).toEqual(["write timed out"]);
  await expect(log.drain()).rejects.toThrow();
  await expect(log.append(ev(9)).committed).rejects.toThrow();
});

test("a fence read that finds the seal fails the batches it was to commit", async () => {
  const { store, log, committed, failures } = setup();
  const { outcome, all } = appendAll(log, 2);
  await settle();
  store.writes[0]!.d.resolve();
  await settle();
  store.reads[0]!.answer(true);
  await all;
  expect(committed).toEqual([]);
  expect(outcome).toEqual(["failed 0", "failed 1"]);
  expect(failures.length).toBe(1);
});

test("a rollover waits for every batch of the full partition; fence reads wait for the rollover", async () => {
  const { store, lease, log, committed } = setup({ bucketSize: 2, maxBatchEvents: 2, commitDepth: 4 });
  const { all } = appendAll(log, 3);
  await settle();
  // Only the first partition's batch is written; the third event waits for the rollover.
  expect(store.writes.map(w => [w.ref.bucket, w.first])).toEqual([[0, 0]]);
  expect(lease.partitions.length).toBe(0);
  store.writes[0]!.d.resolve();
  await settle();
  store.reads[0]!.answer(false);
  await settle();
  expect(committed).toEqual([0, 1]);
  expect(lease.partitions.map(p => p.ref)).toEqual([{ range: 3, bucket: 1 }]);
  // A re-fetch asks for a fence read while the owner row already points at the next partition.
  let confirmed = false;
  const confirm = log.confirmFence().then(() => (confirmed = true));
  await settle();
  expect(store.reads.length).toBe(1); // no read of the partition that left `open`
  lease.partitions[0]!.done();
  await settle();
  expect(store.created).toEqual([{ range: 3, bucket: 1 }]);
  // Now the read goes to the new partition (and the batch there is written).
  const reads = store.reads.slice(1);
  expect(reads.every(r => r.ref.bucket === 1)).toBe(true);
  expect(reads.length).toBe(1);
  expect(confirmed).toBe(false);
  reads[0]!.answer(false);
  await confirm;
  expect(store.writes.map(w => [w.ref.bucket, w.first])).toEqual([
    [0, 0],
    [1, 0],
  ]);
  store.writes[1]!.d.resolve();
  await settle();
  store.reads[2]!.answer(false);
  await all;
  expect(committed).toEqual([0, 1, 0]);
});

test("a commit listener that throws fails the log: callers get an error, nothing hangs", async () => {
  const { store, log, failures } = setup();
  log.onCommitted(() => {
    throw new Error("listener broke");
  });
  const { outcome, all } = appendAll(log, 2);
  await settle();
  store.writes[0]!.d.resolve();
  await settle();
  store.reads[0]!.answer(false);
  await all;
  expect(outcome).toEqual(["failed 0", "failed 1"]);
  expect(failures).toEqual(["listener broke"]);
  await expect(log.drain()).rejects.toThrow();
});

test("a fence read error with only re-fetches waiting fails them, not the log", async () => {
  const { store, log, failures } = setup();
  const confirm = log.confirmFence();
  await settle();
  store.reads[0]!.fail(new Error("read timed out"));
  await expect(confirm).rejects.toMatchObject({ type: "STORAGE_UNAVAILABLE" });
  expect(failures).toEqual([]);
  const { all, outcome } = appendAll(log, 1);
  await settle();
  store.writes[0]!.d.resolve();
  await settle();
  store.reads[1]!.answer(false);
  await all;
  expect(outcome).toEqual(["ok 0"]);
});

describe("with a fence lease", () => {
  let clock = 1_000;
  beforeEach(() => {
    clock = 1_000;
    jest.spyOn(performance, "now").mockImplementation(() => clock);
  });
  afterEach(() => jest.restoreAllMocks());

  test("the fence read goes out beside the write, and the batch commits as soon as it completes", async () => {
    const { store, log, committed } = setup({ fenceLeaseMs: 100 });
    const { outcome, all } = appendAll(log, 2);
    await settle();
    expect(store.writes.length).toBe(1);
    // The read started before the write completed.
    expect(store.reads.length).toBe(1);
    store.reads[0]!.answer(false);
    await settle();
    expect(committed).toEqual([]);
    clock += 99;
    store.writes[0]!.d.resolve();
    await all;
    expect(committed).toEqual([0, 1]);
    expect(outcome).toEqual(["ok 0", "ok 1"]);
    // No second read was needed.
    expect(store.reads.length).toBe(1);
  });

  test("a batch that completes after the lease of the last read waits for a new read", async () => {
    const { store, log, committed } = setup({ fenceLeaseMs: 100 });
    appendAll(log, 2);
    await settle();
    store.reads[0]!.answer(false);
    await settle();
    clock += 100;
    store.writes[0]!.d.resolve();
    await settle();
    expect(committed).toEqual([]);
    expect(store.reads.length).toBe(2);
    clock += 500;
    store.reads[1]!.answer(false);
    await settle();
    // That read started after the write completed: it commits the batch (as without a lease).
    expect(committed).toEqual([0, 1]);
  });

  test("a read that finds the seal commits nothing, also what completes within its lease", async () => {
    const { store, log, committed, failures } = setup({ fenceLeaseMs: 100 });
    const { outcome, all } = appendAll(log, 2);
    await settle();
    store.reads[0]!.answer(true);
    store.writes[0]!.d.resolve();
    await all;
    expect(committed).toEqual([]);
    expect(outcome).toEqual(["failed 0", "failed 1"]);
    expect(failures.length).toBe(1);
  });

  test("answers from memory within the lease need no read; after it, or after endLease, they do", async () => {
    const { store, log } = setup({ fenceLeaseMs: 100 });
    appendAll(log, 1);
    await settle();
    store.reads[0]!.answer(false);
    store.writes[0]!.d.resolve();
    await settle();
    clock += 50;
    await log.confirmFence();
    expect(store.reads.length).toBe(1);
    clock += 50;
    let confirmed = false;
    const confirm = log.confirmFence().then(() => (confirmed = true));
    await settle();
    expect(store.reads.length).toBe(2);
    expect(confirmed).toBe(false);
    store.reads[1]!.answer(false);
    await confirm;
    log.endLease();
    const again = log.confirmFence();
    await settle();
    expect(store.reads.length).toBe(3);
    store.reads[2]!.answer(false);
    await again;
  });

  test("a rollover drops the lease: the new partition needs a read of its own", async () => {
    const { store, lease, log, committed } = setup({
      bucketSize: 2,
      maxBatchEvents: 2,
      commitDepth: 4,
      fenceLeaseMs: 100,
    });
    const { all } = appendAll(log, 3);
    await settle();
    store.reads[0]!.answer(false);
    store.writes[0]!.d.resolve();
    await settle();
    expect(committed).toEqual([0, 1]);
    lease.partitions[0]!.done();
    await settle();
    // Still within the lease of the old partition's read, yet the new batch is not committed
    // without a read of the new partition.
    expect(store.writes.map(w => w.ref.bucket)).toEqual([0, 1]);
    const fresh = store.reads.filter(r => r.ref.bucket === 1);
    expect(fresh.length).toBe(1);
    store.writes[1]!.d.resolve();
    await settle();
    expect(committed).toEqual([0, 1]);
    fresh[0]!.answer(false);
    await all;
    expect(committed).toEqual([0, 1, 0]);
  });
});

test("a fence lease that is not a whole number of ms from 0 to 10 s is refused at start", () => {
  for (const bad of [Number.NaN, Infinity, -1, 1.5, 10_001])
    expect(() => new QueueEngine({} as never, {} as never, {} as never, { fenceLeaseMs: bad })).toThrow(
      expect.objectContaining({ type: "CONFIGURATION_ERROR", message: expect.stringMatching(/fenceLeaseMs/) }),
    );
});

test("a recorded fence lease that cannot be read counts as the longest, never as none", () => {
  const row = (f: unknown) => JSON.stringify({ c: null, s: 1, v: 0, r: [], o: [], f });
  expect(decodeLogState(row(200)).fenceLeaseMs).toBe(200);
  expect(decodeLogState(JSON.stringify({ c: null, s: 1, v: 0, r: [], o: [] })).fenceLeaseMs).toBeUndefined();
  for (const bad of ["200", null, -5, {}])
    expect(decodeLogState(row(bad)).fenceLeaseMs).toBe(UNREADABLE_FENCE_LEASE_MS);
});
