/**
 * What a lookup of task_index sees while a delayed add's two writes (the entry and its hint, both
 * stamped with the add's position) are in flight and land in either order: always "delayed". The
 * table settles it the same way (equal timestamps, the larger hint code wins); the overlay in
 * memory must agree at every moment, or `status` says "waiting" for a delayed task.
 */
import { BodyLoader, DerivedWriter, INDEX_BATCH, overlayIndex } from "../lib/queue/derived-writer";
import type { IndexEntry, QueueStore } from "../lib/queue/store";

type Pending = { resolve: () => void };

/** A writer of queue o/q over a stub store; a write failing for good throws unless `onFailure` takes it. */
function writerOver(
  store: QueueStore,
  onFailure: (reason: string) => void = reason => {
    throw new Error(reason);
  },
): DerivedWriter {
  const hooks = { rowDurable: () => undefined, markDurable: () => undefined, cancelDurable: () => undefined };
  return new DerivedWriter(store, "o/q", new BodyLoader(store, "o/q"), hooks, onFailure);
}

function setup() {
  const writes: Record<"index" | "hint", Pending[]> = { index: [], hint: [] };
  const store = {
    writeIndex: () => new Promise<void>(resolve => writes.index.push({ resolve })),
    writeHint: () => new Promise<void>(resolve => writes.hint.push({ resolve })),
  } as unknown as QueueStore;
  const writer = writerOver(store);
  const delayed = { kind: "delayed" as const, minute: 60_000, part: 0, dueAt: 90_000, pos: 5 };
  writer.enqueue({ kind: "index", taskId: "t", seq: 1, pos: 5, clientId: false, expiresAt: Date.now() + 60_000 });
  writer.enqueue({ kind: "hint", taskId: "t", hint: delayed, at: 5, expiresAt: Date.now() + 60_000 });
  // What the row holds once both landed, as the lookups would read it.
  const stored: IndexEntry = { seq: 1, pos: 5, clientId: false, hint: delayed };
  const seen = (storedNow: IndexEntry | null) => overlayIndex(writer.pendingOf("t"), storedNow)?.hint.kind;
  return { writes, writer, stored, seen };
}

const settle = () => new Promise(r => setImmediate(r));

test.each(["hint first", "entry first"] as const)(
  "a delayed add's entry and hint landing %s: the overlay says delayed at every step",
  async order => {
    const { writes, writer, stored, seen } = setup();
    await settle();
    expect(writes.index).toHaveLength(1);
    expect(writes.hint).toHaveLength(1);
    // Both in flight: the row may hold nothing yet.
    expect(seen(null)).toBe("delayed");
    const [first, second] =
      order === "hint first" ? [writes.hint[0]!, writes.index[0]!] : [writes.index[0]!, writes.hint[0]!];
    first.resolve();
    await settle();
    // One landed: the row holds only that one (an entry without its hint, or a hint without an entry).
    const partial: IndexEntry | null =
      order === "hint first" ? null : { seq: 1, pos: 5, clientId: false, hint: { kind: "none" } };
    expect(seen(partial)).toBe("delayed");
    second.resolve();
    await settle();
    expect(writer.hasPending("t")).toBe(false);
    expect(seen(stored)).toBe("delayed");
  },
);

test("index entries enqueued in one turn share requests of at most INDEX_BATCH; each lands once, with the other writes", async () => {
  const groups: string[][] = [];
  const hints: string[] = [];
  let failNext = true;
  const store = {
    writeIndex: async (_q: string, taskId: string) => void groups.push([taskId]),
    writeIndexes: async (_q: string, entries: { taskId: string }[]) => {
      // The first group fails once: it is retried whole, and no entry is lost or written twice after it lands.
      if (failNext) {
        failNext = false;
        throw new Error("a timeout");
      }
      groups.push(entries.map(e => e.taskId));
    },
    writeHint: async (_q: string, taskId: string) => void hints.push(taskId),
  } as unknown as QueueStore;
  const failures: string[] = [];
  const writer = writerOver(store, reason => failures.push(reason));
  const ids = Array.from({ length: 20 }, (_, i) => `t${i}`);
  const expiresAt = Date.now() + 60_000;
  const delayed = { kind: "delayed" as const, minute: 60_000, part: 0, dueAt: 90_000, pos: 3 };
  ids.forEach((taskId, i) => {
    writer.enqueue({ kind: "index", taskId, seq: i, pos: i, clientId: false, expiresAt });
    if (i === 3) writer.enqueue({ kind: "hint", taskId, hint: delayed, at: 3, expiresAt });
  });
  expect(writer.hasPendingEntry("t0")).toBe(true);
  await writer.barrier();
  expect(failures).toEqual([]);
  expect(groups.map(g => g.length).sort((a, b) => b - a)).toEqual([INDEX_BATCH, INDEX_BATCH, 20 - 2 * INDEX_BATCH]);
  expect(groups.flat().sort()).toEqual([...ids].sort());
  expect(hints).toEqual(["t3"]);
  for (const id of ids) expect(writer.hasPending(id)).toBe(false);
  // One entry alone is one statement.
  writer.enqueue({ kind: "index", taskId: "alone", seq: 99, pos: 99, clientId: false, expiresAt });
  await writer.barrier();
  expect(groups[groups.length - 1]).toEqual(["alone"]);
});

test("long ids make smaller groups (Cassandra warns of batches over 5 KiB)", async () => {
  const groups: string[][] = [];
  const store = {
    writeIndex: async (_q: string, taskId: string) => void groups.push([taskId]),
    writeIndexes: async (_q: string, entries: { taskId: string }[]) => void groups.push(entries.map(e => e.taskId)),
  } as unknown as QueueStore;
  const writer = writerOver(store);
  // 256 characters of two bytes each: 512 bytes an id.
  const ids = Array.from({ length: 8 }, (_, i) => `${i}${"é".repeat(255)}`);
  ids.forEach((taskId, i) =>
    writer.enqueue({ kind: "index", taskId, seq: i, pos: i, clientId: true, expiresAt: Date.now() + 60_000 }),
  );
  await writer.barrier();
  expect(groups.map(g => g.length)).toEqual([4, 4]);
  expect(groups.flat().sort()).toEqual([...ids].sort());
});
