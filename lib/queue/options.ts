/** Options of the queue engine. Every field has a default; the service maps settings/env onto them. */
export interface QueueEngineOptions {
  /**
   * Keyspace holding the queue tables.
   * @defaultValue "worker_queue"
   */
  keyspace: string;
  /**
   * Replication of the keyspace when it is created, as CQL map text.
   * @defaultValue "{'class': 'SimpleStrategy', 'replication_factor': 1}"
   */
  replication: string;
  /**
   * How long a task (and every row about it) lives, in seconds.
   * @defaultValue 604800 (7 days)
   */
  retentionSeconds: number;
  /**
   * Events per log partition before the owner rolls over to a new one (at most 16,384).
   * @defaultValue 10000
   */
  bucketSize: number;
  /**
   * Rows per partition of the delayed and dead tables before the next part of the minute (or hour) is used.
   * @defaultValue 10000
   */
  partSize: number;
  /**
   * Ready tasks a queue's owner keeps in memory at most (the window), and delayed tasks of the
   * minute now due; the rest of the backlog is read from Cassandra a page at a time.
   * @defaultValue 512
   */
  windowMax: number;
  /**
   * Bytes of sealed values the window holds at most.
   * @defaultValue 16 MiB
   */
  windowMaxBytes: number;
  /**
   * Events between checkpoints (at least twice the tasks in flight); a takeover reads about this many.
   * @defaultValue 2000
   */
  checkpointEvents: number;
  /**
   * Longest time between checkpoints while anything changes, in ms.
   * @defaultValue 2000
   */
  checkpointMs: number;
  /**
   * Events per batch of the commit pipeline at most.
   * @defaultValue 128
   */
  maxBatchEvents: number;
  /**
   * Batches of one queue written to Cassandra and not yet committed, at most (the commit pipeline's
   * depth; 1 writes one batch at a time).
   * @defaultValue 4
   */
  commitDepth: number;
  /**
   * The fence lease, in ms: a fence read that finds the log open also commits the batches that
   * complete within this long after the read started, so reads run beside the writes and a commit
   * usually takes one Cassandra round trip instead of two. A takeover then waits twice the previous
   * owner's lease after sealing its log (not after a graceful release). Relies on clocks that
   * measure intervals to within a factor of two (docs/ARCHITECTURE.md, "The fence lease"); 0 turns
   * it off: every commit waits for a fence read started after its write completed.
   * @defaultValue 200
   */
  fenceLeaseMs: number;
  /**
   * Bytes of sealed data per batch at most (a single larger event still goes alone).
   * @defaultValue 4 MiB
   */
  maxBatchBytes: number;
  /**
   * Owner lease length in ms; renewed every third of it.
   * @defaultValue 15000
   */
  ownerLeaseMs: number;
  /**
   * How often a queue node tells the others it is alive (and how many queues it owns), in ms.
   * @defaultValue 500
   */
  beatIntervalMs: number;
  /**
   * A queue node not heard from for this long is dead for routing, and its queues are taken over.
   * @defaultValue 1500
   */
  nodeTimeoutMs: number;
  /**
   * A forwarded call that gets no answer for this long (plus its wait, for a long poll) takes the queue over.
   * @defaultValue 3000
   */
  forwardTimeoutMs: number;
  /**
   * Queue nodes rebalance only after the set of live nodes has been stable for this long, in ms.
   * @defaultValue 3000
   */
  rebalanceAfterMs: number;
  /**
   * A queue with no calls for this long is released by its owner.
   * @defaultValue 600000
   */
  idleReleaseMs: number;
  /**
   * First retry delay of a failed workflow hand-over, doubled up to handoverMaxDelayMs.
   * @defaultValue 500
   */
  handoverRetryMs: number;
  /** @defaultValue 30000 */
  handoverMaxDelayMs: number;
  /**
   * Longest total lease a worker can reach with heartbeats (update), in ms.
   * @defaultValue 21600000 (6 hours)
   */
  maxLeaseMs: number;
  /**
   * Deliveries of a task before it goes to the dead-letter list, unless `add` says otherwise; 0 = unlimited.
   * @defaultValue 20
   */
  maxAttempts: number;
}

export interface QueueEngineOptions {
  /**
   * "local" (LOCAL_SERIAL) when every queue node works in one data center; "global" (SERIAL) when
   * queue nodes run in several, so that two data centers can never both take a queue.
   * @defaultValue "local"
   */
  serialScope: "local" | "global";
}

export const defaultEngineOptions: QueueEngineOptions = {
  keyspace: "worker_queue",
  replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
  retentionSeconds: 7 * 24 * 3600,
  bucketSize: 10_000,
  partSize: 10_000,
  windowMax: 512,
  windowMaxBytes: 16 * 1024 * 1024,
  checkpointEvents: 2000,
  checkpointMs: 2000,
  beatIntervalMs: 500,
  nodeTimeoutMs: 1500,
  forwardTimeoutMs: 3000,
  rebalanceAfterMs: 3000,
  maxBatchEvents: 128,
  commitDepth: 4,
  fenceLeaseMs: 200,
  maxBatchBytes: 4 * 1024 * 1024,
  ownerLeaseMs: 15_000,
  idleReleaseMs: 600_000,
  handoverRetryMs: 500,
  handoverMaxDelayMs: 30_000,
  maxLeaseMs: 6 * 3600 * 1000,
  maxAttempts: 20,
  serialScope: "local",
};
