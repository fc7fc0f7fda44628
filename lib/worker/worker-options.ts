/** Options shared by QueueWorker (broker.call) and HttpQueueWorker (the HTTP gateway). */

/** Where a worker reports errors that nobody listens for with `worker.on("error")`. */
export interface WorkerLogger {
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

export interface WorkerOptions {
  /** The queue to work on (a uuid). */
  serviceId: string;
  /**
   * Tasks run at once. Each slot fetches under its own worker id: `<workerId>-<slot>`, or `workerId`
   * itself when concurrency is 1.
   * @defaultValue 1
   */
  concurrency?: number;
  /**
   * Lease length in seconds: a task neither acked nor heartbeated for this long goes to another worker.
   * @defaultValue 60
   */
  timeToRecover?: number;
  /**
   * The worker's id, the prefix of its slots' ids. Keep it unique per worker: two workers with the
   * same id share their held tasks.
   * @defaultValue QueueWorker: `<nodeID>-<random>`; HttpQueueWorker: `<hostname>-<pid>-<random>`
   */
  workerId?: string;
  /**
   * Long poll: seconds a fetch may wait on the queue for a task (0-20). close() waits at most this
   * long for a poll in flight, so that a task it brings is given back at once.
   * @defaultValue 5
   */
  wait?: number;
  /**
   * Heartbeats (`update`) are sent every `heartbeatFraction * timeToRecover` while a handler runs.
   * @defaultValue 1/3
   */
  heartbeatFraction?: number;
  /**
   * How long close() waits for running handlers before it gives their tasks back, in ms.
   * @defaultValue 30000
   */
  closeTimeout?: number;
  /**
   * Timeout of each call to the queue, in ms; a fetch gets `wait` seconds on top.
   * @defaultValue 10000
   */
  callTimeout?: number;
  /**
   * Seconds before a failed task (its handler threw) may be delivered again: a number, or a function
   * of the attempt that failed and its error.
   * @defaultValue 0
   */
  retryDelay?: number | ((attempt: number, error: unknown) => number);
  /**
   * Pauses between retries of a failed call (network, 5xx, retryable errors), in ms: jittered,
   * doubling from `minMs` up to `maxMs`.
   * @defaultValue { minMs: 200, maxMs: 5000 }
   */
  backoff?: { minMs?: number; maxMs?: number };
  /**
   * Start fetching at once; with false, call run().
   * @defaultValue true
   */
  autorun?: boolean;
  /** Receives errors when no `error` listener is attached. @defaultValue QueueWorker: the broker's logger; HttpQueueWorker: console */
  logger?: WorkerLogger;
}
