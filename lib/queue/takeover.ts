/**
 * Taking a queue over: bump the fencing range, seal the partitions a previous owner could still
 * write, read the last checkpoint and the events after it, rewrite their derived rows, write our
 * own first checkpoint, serve. Nothing here reads the backlog, so a takeover costs the same at any
 * backlog. The argument for why this loses nothing is in docs/ARCHITECTURE.md ("Ownership").
 */
import { OwnershipLostError } from "../errors";
import { decodeSnapshot, type Snapshot } from "./checkpoint";
import { BodyLoader, DerivedWriter } from "./derived-writer";
import type { QueueEngineOptions } from "./options";
import { OwnedQueue } from "./owned-queue";
import { OwnerLease } from "./owner-lease";
import type { QueueKey } from "./queue-key";
import type { StateHooks } from "./queue-state";
import { recover, type Recovered } from "./recovery";
import {
  EMPTY_LOG_STATE,
  encodeLogState,
  UNREADABLE_FENCE_LEASE_MS,
  type LogState,
  type OwnerRow,
  type QueueStore,
} from "./store";
import { position, splitPosition, type BucketRef, type StoredEvent } from "./task";

export interface TakeoverDeps {
  store: QueueStore;
  options: QueueEngineOptions;
  nodeId: string;
  /** Whether the node is alive as far as this node can tell (beats, Moleculer's registry). */
  isNodeAlive(nodeId: string): boolean;
  hooks(key: QueueKey): StateHooks;
  onFailure(key: QueueKey, reason: string): void;
  warn(message: string): void;
}

export type TakeoverResult = { owned: OwnedQueue } | { owner: string };

/** A fence lease (validated by the engine, or read by decodeLogState) as whole ms to wait out. */
function leaseOf(ms: number | undefined): number {
  return ms ? Math.min(Math.ceil(ms), UNREADABLE_FENCE_LEASE_MS) : 0;
}

/** True when the row names another node that is alive and holds a valid lease. */
export function ownedElsewhere(row: OwnerRow | null, deps: Pick<TakeoverDeps, "nodeId" | "isNodeAlive">): boolean {
  return (
    row !== null &&
    row.node !== "" &&
    row.node !== deps.nodeId &&
    row.leaseUntil > Date.now() &&
    deps.isNodeAlive(row.node)
  );
}

/**
 * Where the gap-free run of batches that starts at `start` ends, given the spans [first, end) of
 * the batches that reached the partition. Everything the previous owner committed lies before it;
 * a batch after a hole was never committed (batches commit in log order).
 */
export function gapFreeEnd(spans: readonly (readonly [number, number])[], start: number): number {
  let end = start;
  for (const [first, last] of [...spans].sort((a, b) => a[0] - b[0])) {
    if (first > end) break;
    if (last > end) end = last;
  }
  return end;
}

/** The end to record for a partition we sealed, from what one read of it returned. */
function endOf(tail: { events: StoredEvent[]; spans: [number, number][] }, start: number): number {
  if (tail.spans.length > 0) return gapFreeEnd(tail.spans, start);
  // No markers in the same read as the rows: version 2.0 wrote them (conditional batches, each
  // committed when applied, none after the seal), so they stand as they are. (Rows of this version
  // and their marker reach a replica together, and the read returns both or neither.)
  const last = tail.events[tail.events.length - 1];
  return last ? splitPosition(last.at).pos + 1 : start;
}

/**
 * The events of a partition we sealed, from `start` up to its end, which is recorded first (once,
 * by whichever takeover gets there first): rows at or after it, a failed owner's writes after a
 * hole or ones that landed late, are ignored by everyone from now on (docs/ARCHITECTURE.md,
 * Invariant A').
 */
async function readSealed(store: QueueStore, queue: string, b: BucketRef, start: number, warn: (m: string) => void) {
  for (let attempt = 0; ; attempt++) {
    const tail = await store.readTail(queue, b, start);
    if (!tail.onePage) warn(`${queue}: log partition ${b.range}/${b.bucket} was read in several pages`);
    const below = (end: number) => tail.events.filter(e => splitPosition(e.at).pos < end);
    // Recorded by an earlier takeover (whose read left its rows on a quorum before it recorded it).
    if (tail.end !== null) return below(tail.end);
    const end = endOf(tail, start);
    const stood = await store.setBucketEnd(queue, b, end);
    if (stood === end) return below(end);
    // Another takeover recorded its end first: read again, after it.
    if (attempt >= 2) throw new OwnershipLostError(queue, "the end of a log partition kept changing");
  }
}

/** The events from the checkpoint's position on, read through the partitions of `replay`. */
async function readReplay(
  store: QueueStore,
  queue: string,
  state: LogState,
  warn: (m: string) => void,
): Promise<StoredEvent[]> {
  const from = state.ckpt ?? 0;
  const sealed = new Set(state.open.map(b => `${b.range}:${b.bucket}`));
  const out: StoredEvent[] = [];
  for (const b of state.replay) {
    const after = position(b.range, b.bucket + 1, 0);
    if (after <= from) continue;
    const start = position(b.range, b.bucket, 0) < from ? splitPosition(from).pos : 0;
    // A partition left by a rollover holds only committed events (the rollover waited for them).
    if (sealed.has(`${b.range}:${b.bucket}`)) out.push(...(await readSealed(store, queue, b, start, warn)));
    else out.push(...(await store.readBucketAll(queue, b, start)));
  }
  return out.filter(e => e.at >= from);
}

/** The snapshot the owner row points at, checked against the version it names. */
async function readSnapshot(store: QueueStore, queue: string, state: LogState): Promise<Snapshot | null> {
  if (state.ckpt === null) return null;
  const slot = await store.readCheckpoint(queue, state.slot, true);
  if (slot.version !== state.version || slot.chunks.length === 0 || slot.chunks.some(c => !c)) {
    throw new Error(`checkpoint ${state.version} of ${queue} is missing from slot ${state.slot}`);
  }
  return decodeSnapshot(slot.chunks);
}

/** Rewrites the derived rows of the replayed events and waits until they are durable. */
async function redoDerived(store: QueueStore, key: QueueKey, recovered: Recovered): Promise<void> {
  if (recovered.redo.length === 0) return;
  let failure: string | null = null;
  const writer = new DerivedWriter(
    store,
    key.id,
    new BodyLoader(store, key.id),
    { rowDurable: () => undefined, markDurable: () => undefined, cancelDurable: () => undefined },
    reason => (failure ??= reason),
  );
  for (const w of recovered.redo) writer.enqueue(w);
  await writer.barrier().catch(() => undefined);
  if (failure) throw new OwnershipLostError(key.id, `rewriting derived rows failed: ${failure}`);
}

export async function takeOver(key: QueueKey, deps: TakeoverDeps): Promise<TakeoverResult> {
  const { store, options } = deps;
  const existing = await store.readOwner(key.id, true);
  if (existing && ownedElsewhere(existing, deps)) return { owner: existing.node };
  if (existing && existing.legacyBuckets.length > 0 && existing.stateText === null) {
    throw new OwnershipLostError(
      key.id,
      "the queue was written by version 1 of the queue; drain it with version 1 before upgrading",
    );
  }

  // 2. Bump the range, registering our first partition so that a crash from here on leaves it sealed.
  //    Partitions of takeovers that never served (newer ranges than the checkpoint's) were never
  //    written; they are sealed once more below and then forgotten, so `open` stays short.
  const prev = existing?.state ?? { ...EMPTY_LOG_STATE };
  const servedRange = prev.ckpt === null ? -1 : splitPosition(prev.ckpt).range;
  const range = (existing?.rangeId ?? 0) + 1;
  const first: BucketRef = { range, bucket: 0 };
  const served = prev.open.filter(b => b.range === servedRange);
  const bumped = {
    rangeId: range,
    node: deps.nodeId,
    leaseUntil: Date.now() + options.ownerLeaseMs,
    // A later takeover waits out the longest fence lease of the owners that may still write `open`.
    state: {
      ...prev,
      open: [...served, first],
      fenceLeaseMs: Math.max(leaseOf(prev.fenceLeaseMs), leaseOf(options.fenceLeaseMs)) || undefined,
    },
  };
  const text = existing
    ? await store.updateOwner(key.id, existing, bumped)
    : (await store.insertOwner(key.id, bumped))
      ? encodeLogState(bumped.state)
      : null;
  if (text === null) {
    const winner = await store.readOwner(key.id, true);
    return { owner: winner?.node ?? "" };
  }

  // 3. Seal: from here on no previous owner can commit anything.
  await Promise.all(prev.open.map(b => store.sealBucket(key.id, b)));
  // A previous owner with a fence lease commits batches that complete up to its lease after the
  // start of a fence read that found the log open, so before the seal: twice its lease from now
  // (on our clock) every such batch is on a quorum, and our read below sees it.
  // (+2 ms: a timer may fire up to a millisecond early.)
  const wait = leaseOf(prev.fenceLeaseMs);
  if (wait > 0) await new Promise(r => setTimeout(r, 2 * wait + 2));

  // 4. The last checkpoint and everything after it.
  const [snapshot, events, slot0, slot1] = await Promise.all([
    readSnapshot(store, key.id, prev),
    readReplay(store, key.id, prev, deps.warn),
    store.readCheckpoint(key.id, 0, false),
    store.readCheckpoint(key.id, 1, false),
  ]);
  const recovered = recover(snapshot, events, [...prev.replay, ...served]);

  // 5. Derived rows of the replayed events, before anyone can look for them.
  await redoDerived(store, key, recovered);

  // 6. Our first partition and checkpoint; then the owner row points at it. Nothing is written to
  //    the partition before that, so a takeover that stops short leaves it empty.
  if (!(await store.createBucket(key.id, first))) {
    throw new OwnershipLostError(key.id, "our first log partition exists already: another takeover raced us");
  }
  const lease = new OwnerLease(
    store,
    key.id,
    { ...bumped, stateText: text, legacyText: null },
    options.ownerLeaseMs,
    options.fenceLeaseMs,
  );
  const owned = new OwnedQueue(
    key,
    lease,
    first,
    recovered,
    { current: prev.slot, version: prev.version, slotVersions: [slot0.version, slot1.version] },
    {
      store,
      options,
      hooks: deps.hooks(key),
      onFailure: reason => deps.onFailure(key, reason),
      warn: deps.warn,
    },
  );
  try {
    await owned.checkpointer.now();
  } catch (err) {
    owned.abandon((err as Error).message);
    throw err instanceof OwnershipLostError ? err : new OwnershipLostError(key.id, (err as Error).message);
  }
  return { owned };
}
