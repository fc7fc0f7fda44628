/**
 * Taking a queue over: bump the fencing range, seal every partition a previous owner could write
 * to, read them, carry the live tasks into a partition of our own range, retire the old ones.
 * The argument for why this loses nothing is in docs/ARCHITECTURE.md ("Ownership").
 */
import { OwnershipLostError } from "../errors";
import { EventLog } from "./event-log";
import type { QueueEngineOptions } from "./options";
import { bucketKey, OwnerLease } from "./owner-lease";
import { foldEvents, QueueShard, type ShardHooks } from "./queue-shard";
import type { BucketRef, OwnerRow, QueueStore } from "./store";

export interface TakeoverDeps {
  store: QueueStore;
  options: QueueEngineOptions;
  nodeId: string;
  /** Whether Moleculer currently lists the node as available. */
  isNodeAvailable(nodeId: string): boolean;
  hooks(queue: string): ShardHooks;
  onFailure(queue: string, reason: string): void;
  onRollover(queue: string): void;
}

export type TakeoverResult = { shard: QueueShard; lease: OwnerLease; log: EventLog } | { owner: string };

/** True when the row names another node that is alive and holds a valid lease. */
export function ownedElsewhere(row: OwnerRow | null, deps: Pick<TakeoverDeps, "nodeId" | "isNodeAvailable">): boolean {
  return (
    row !== null &&
    row.node !== "" &&
    row.node !== deps.nodeId &&
    row.leaseUntil > Date.now() &&
    deps.isNodeAvailable(row.node)
  );
}

export async function takeOver(queue: string, deps: TakeoverDeps): Promise<TakeoverResult> {
  const { store, options } = deps;
  const existing = await store.readOwner(queue, true);
  if (existing && ownedElsewhere(existing, deps)) return { owner: existing.node };

  const now = Date.now();
  const row: OwnerRow = {
    rangeId: Math.max((existing?.rangeId ?? 0) + 1, now),
    node: deps.nodeId,
    leaseUntil: now + options.ownerLeaseMs,
    buckets: existing?.buckets ?? [],
  };
  const won = existing ? await store.updateOwner(queue, existing, row) : await store.insertOwner(queue, row);
  if (!won) {
    const winner = await store.readOwner(queue, true);
    return { owner: winner?.node ?? "" };
  }

  const previous = row.buckets;
  await Promise.all(previous.map(b => store.sealBucket(queue, b)));
  const partitions = await Promise.all(
    previous.map(async (ref: BucketRef) => ({ ref, events: await store.readBucket(queue, ref) })),
  );
  const recovered = foldEvents(partitions);

  const lease = new OwnerLease(store, queue, row, options.ownerLeaseMs);
  const first: BucketRef = { range: row.rangeId, bucket: 0 };
  await lease.addBucket(first);
  if (!(await store.createBucket(queue, first))) {
    throw new OwnershipLostError(queue, "our first log partition exists already: another takeover raced us");
  }

  const log = new EventLog(
    store,
    lease,
    options,
    first,
    0,
    reason => deps.onFailure(queue, reason),
    () => deps.onRollover(queue),
  );
  const shard = new QueueShard(
    queue,
    log,
    lease,
    {
      maxOpenBuckets: options.maxOpenBuckets,
      bucketSize: options.bucketSize,
      maxLeaseMs: options.maxLeaseMs,
      retentionMs: options.retentionSeconds * 1000,
    },
    recovered,
    deps.hooks(queue),
  );
  await shard.carry(shard.liveTasks());
  if (previous.length > 0) await lease.retireBuckets(new Set(previous.map(bucketKey)));
  await Promise.all(
    shard
      .liveTasks()
      .filter(t => t.clientId)
      .map(t => store.writeTaskIndex(queue, t.id, t.seq, t.expiresAt)),
  );
  return { shard, lease, log };
}
