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
   * Events per log partition before the owner rolls over to a new one.
   * @defaultValue 10000
   */
  bucketSize: number;
  /**
   * Open log partitions per queue before the oldest one's live tasks are carried forward.
   * @defaultValue 16
   */
  maxOpenBuckets: number;
  /**
   * Events per fenced batch at most.
   * @defaultValue 128
   */
  maxBatchEvents: number;
  /**
   * Bytes of sealed data per fenced batch at most (a single larger event still goes alone).
   * @defaultValue 4 MiB
   */
  maxBatchBytes: number;
  /**
   * Owner lease length in ms; renewed every third of it.
   * @defaultValue 15000
   */
  ownerLeaseMs: number;
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
  maxOpenBuckets: 16,
  maxBatchEvents: 128,
  maxBatchBytes: 4 * 1024 * 1024,
  ownerLeaseMs: 15_000,
  idleReleaseMs: 600_000,
  handoverRetryMs: 500,
  handoverMaxDelayMs: 30_000,
  maxLeaseMs: 6 * 3600 * 1000,
  maxAttempts: 20,
  serialScope: "local",
};
