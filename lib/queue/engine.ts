/**
 * QueueEngine: the entry points of add / fetch / ack (and job control) on any node. It seals and
 * opens values with the caller's context, hands requests to the router (which runs them on the
 * local owner or forwards them), and runs this node's part of the cluster: beats, placement,
 * orphaned hand-overs. It knows nothing of Moleculer: the service gives it a `Cluster`.
 */
import { RecentMap } from "./recent-map";
import { errors, types, type Client } from "cassandra-driver";
import type { Sealed, ValueCodec } from "../codec";
import { ConfigurationError, InvalidParameterError, StorageError, StorageUnavailableError } from "../errors";
import type { HandoverTarget } from "./handover";
import { Membership, type Beat } from "./membership";
import { defaultEngineOptions, type QueueEngineOptions } from "./options";
import { QueueHost, type TaskEvent } from "./queue-host";
import { queueKey, type QueueKey } from "./queue-key";
import { Router } from "./router";
import { migrateSchema } from "./schema";
import { QueueStore } from "./store";
import type {
  AckOutcome,
  CancelOutcome,
  Delivery,
  PublicState,
  QueueStats,
  ReleaseOutcome,
  TaskStatus,
  UpdateOutcome,
} from "./task";
import {
  lateSeal,
  openField,
  sealContext,
  type DeadEntry,
  type Inspected,
  type LateSeal,
  type QueueRequest,
  type WireRequest,
} from "./wire";

/** The longest fence lease: a takeover after a crash waits twice it. */
const MAX_FENCE_LEASE_MS = 10_000;
export type { TaskEvent } from "./queue-host";

/** What the engine needs from the cluster it runs in (implemented by the Moleculer service). */
export interface Cluster extends HandoverTarget {
  readonly nodeId: string;
  /** Runs the request on `nodeId` (which calls `QueueEngine.executeForwarded` there); rejects after `timeoutMs`. */
  forward(nodeId: string, request: WireRequest, caller: unknown, timeoutMs: number): Promise<unknown>;
  /** Publishes a task event (the service emits it as a Moleculer event and counts it in metrics). */
  publish(event: TaskEvent): void;
  /** Sends this node's beat to the queue service on every other node. */
  beat(beat: Beat): void;
  /** The nodes Moleculer lists as running the queue service. */
  queueNodes(): string[];
  /** Whether Moleculer lists the node as connected. */
  isNodeAvailable(nodeId: string): boolean;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; debug(...a: unknown[]): void };
}

export interface FetchedTask {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled: boolean;
  value: unknown;
}

export interface DeadTask {
  taskId: string;
  attempt: number;
  reason?: string;
  error?: unknown;
  expiresAt: number;
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v === undefined ? null : v), "utf8");
const unjson = (b: Buffer): unknown => JSON.parse(b.toString("utf8"));

/** What the workflow receives when a task with a token is cancelled. */
function cancelledError(taskId: string): { type: string; message: string; taskId: string } {
  return { type: "TASK_CANCELLED", message: "The task was cancelled", taskId };
}

/** The caller's grant is not kept with an outcome: the hand-over, maybe much later, brings its own. */
function withoutGrant(outcome: { result?: unknown; error?: unknown; meta?: unknown }): unknown {
  const meta = outcome.meta;
  if (typeof meta !== "object" || meta === null || !("grant" in meta)) return outcome;
  const { grant: _grant, ...rest } = meta as Record<string, unknown>;
  return { ...outcome, meta: rest };
}

/** Events per log partition at most: a log position keeps 14 bits for the place in its partition. */
const MAX_BUCKET_EVENTS = 2 ** 14;

/** How often each node looks for queues with pending hand-overs that nobody owns. */
const ORPHAN_SCAN_MS = 10_000;

export class QueueEngine {
  readonly options: QueueEngineOptions;
  readonly store: QueueStore;
  private readonly membership: Membership;
  private readonly host: QueueHost;
  private readonly router: Router;
  /** When this node last wrote each queue's owner_queues row (rewritten hourly, not on every add). */
  private readonly registered = new RecentMap<number>(100_000);
  private orphanTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: Client,
    private readonly cluster: Cluster,
    private readonly codec: ValueCodec,
    options: Partial<QueueEngineOptions> = {},
  ) {
    // An option given as undefined means its default (a plain spread would keep the undefined).
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = { ...defaultEngineOptions, ...given };
    const lease = this.options.fenceLeaseMs;
    if (!(Number.isInteger(lease) && lease >= 0 && lease <= MAX_FENCE_LEASE_MS)) {
      throw new ConfigurationError(
        "fenceLeaseMs",
        `fenceLeaseMs must be a whole number of ms from 0 to ${MAX_FENCE_LEASE_MS} (got ${String(lease)})`,
      );
    }
    if (!(this.options.bucketSize >= 1 && this.options.bucketSize <= MAX_BUCKET_EVENTS)) {
      throw new ConfigurationError(
        "bucketSize",
        `bucketSize must be between 1 and ${MAX_BUCKET_EVENTS} (a log position keeps 14 bits for it)`,
      );
    }
    this.store = new QueueStore(client, this.options.keyspace, this.options.retentionSeconds, this.options.serialScope);
    this.membership = new Membership(
      cluster.nodeId,
      this.options,
      beat => cluster.beat(beat),
      () => this.host.size,
      { queueNodes: () => cluster.queueNodes(), isAvailable: id => cluster.isNodeAvailable(id) },
    );
    this.host = new QueueHost({
      store: this.store,
      options: this.options,
      nodeId: cluster.nodeId,
      membership: this.membership,
      codec,
      handover: cluster,
      publish: e => cluster.publish(e),
      logger: cluster.logger,
    });
    this.router = new Router(this.host, this.membership, this.store, cluster, this.options);
  }

  async start(): Promise<void> {
    await migrateSchema(this.client, this.options);
    this.membership.start();
    this.host.start();
    this.orphanTimer = setInterval(() => void this.adoptOrphans(), ORPHAN_SCAN_MS);
    this.orphanTimer.unref();
  }

  /** Hands every owned queue over (flushing and checkpointing first) so other nodes can take them at once. */
  async stop(): Promise<void> {
    clearInterval(this.orphanTimer);
    await this.host.stop();
    this.membership.stop();
  }

  /** A beat of another queue node arrived. */
  beatReceived(beat: Beat): void {
    this.membership.received(beat);
  }

  /** Moleculer says the node is gone. */
  nodeDisconnected(nodeId: string): void {
    this.membership.disconnected(nodeId);
    this.router.forget(nodeId);
  }

  /** Queues this node serves now ("<ownerId>/<serviceId>"). */
  ownedQueues(): string[] {
    return this.host.keys().map(k => k.id);
  }

  /** Ready tasks per queue this node serves, for the depth gauge. */
  ownedDepths(): { serviceId: string; ready: number }[] {
    return this.host.depths();
  }

  // ---- entry points (any node) -----------------------------------------------------------------

  async add(
    caller: unknown,
    key: QueueKey,
    input: {
      taskId: string;
      clientId: boolean;
      value: unknown;
      token?: unknown;
      notBefore?: number;
      maxAttempts?: number;
    },
  ): Promise<void> {
    const [value, token] = await Promise.all([
      this.codec.seal(sealContext(key, input.taskId, "value"), json(input.value), caller),
      input.token === undefined
        ? undefined
        : this.codec.seal(sealContext(key, input.taskId, "token"), json(input.token), caller),
    ]);
    await this.route(
      {
        op: "add",
        key,
        taskId: input.taskId,
        clientId: input.clientId,
        value,
        token,
        expiresAt: Date.now() + this.options.retentionSeconds * 1000,
        notBefore: input.notBefore,
        maxAttempts: input.maxAttempts ?? this.options.maxAttempts,
      },
      caller,
    );
    await this.register(key);
  }

  fetch(
    caller: unknown,
    key: QueueKey,
    worker: string,
    timeToRecoverMs: number,
    waitMs = 0,
  ): Promise<FetchedTask | null> {
    return this.route({ op: "fetch", key, worker, timeToRecoverMs, waitMs }, caller).then(d =>
      this.opened(caller, key, d as Delivery | null),
    );
  }

  /** A delivery with its value opened for the caller. */
  private opened(caller: unknown, key: QueueKey, d: Delivery | null): Promise<FetchedTask | null> | null {
    if (!d) return null;
    // Promise.resolve: a codec of the user's may answer with a plain Buffer.
    return Promise.resolve(this.codec.open(sealContext(key, d.taskId, "value"), d.value, caller)).then(plain => ({
      taskId: d.taskId,
      attempt: d.attempt,
      leaseUntil: d.leaseUntil,
      cancelled: d.cancelled,
      value: unjson(plain),
    }));
  }

  /**
   * `outcome` is { result, error, meta }: kept (sealed) only for tasks with a workflow token; sealed
   * here when the call is forwarded, so it never leaves this node in plaintext.
   */
  ack(
    caller: unknown,
    key: QueueKey,
    worker: string,
    taskId: string | undefined,
    outcome: { result?: unknown; error?: unknown; meta?: unknown },
  ): Promise<AckOutcome> {
    const failed = outcome.error !== undefined && outcome.error !== null;
    const sealed = this.lateSeal(key, "result", taskId, withoutGrant(outcome), caller);
    return this.route({ op: "ack", key, worker, taskId, failed, outcome: sealed }, caller) as Promise<AckOutcome>;
  }

  /**
   * An ack, then the worker's next task (as `fetch` with `timeToRecoverMs`, no wait) in the same
   * call: on the owner both events usually share one batch and one commit. `next` is undefined
   * when the next task could not be given (its value did not open, say): the ack's outcome still
   * stands, and the caller fetches on its own, where the error shows.
   */
  async ackThenFetch(
    caller: unknown,
    key: QueueKey,
    worker: string,
    taskId: string | undefined,
    outcome: { result?: unknown; error?: unknown; meta?: unknown },
    timeToRecoverMs: number,
  ): Promise<AckOutcome & { next?: FetchedTask | null }> {
    if (taskId === undefined) throw new InvalidParameterError("taskId", "an ack with next must name its taskId");
    const failed = outcome.error !== undefined && outcome.error !== null;
    const sealed = this.lateSeal(key, "result", taskId, withoutGrant(outcome), caller);
    const r = (await this.route(
      { op: "ack", key, worker, taskId, failed, outcome: sealed, next: { timeToRecoverMs } },
      caller,
    )) as AckOutcome & { next?: Delivery | null };
    const { next, ...acked } = r;
    try {
      // An owner of an older version acks and leaves `next` out: fetch on our own.
      if (next === undefined) return { ...acked, next: await this.fetch(caller, key, worker, timeToRecoverMs) };
      return { ...acked, next: await this.opened(caller, key, next) };
    } catch {
      return acked;
    }
  }

  update(caller: unknown, key: QueueKey, worker: string, taskId?: string, progress?: unknown): Promise<UpdateOutcome> {
    const sealed = progress === undefined ? undefined : this.lateSeal(key, "progress", taskId, progress, caller);
    return this.route({ op: "update", key, worker, taskId, progress: sealed }, caller) as Promise<UpdateOutcome>;
  }

  release(
    caller: unknown,
    key: QueueKey,
    worker: string,
    input: { taskId?: string; delayMs: number; error?: unknown },
  ): Promise<ReleaseOutcome> {
    const error =
      input.error === undefined ? undefined : this.lateSeal(key, "error", input.taskId, input.error, caller);
    return this.route(
      { op: "release", key, worker, taskId: input.taskId, delayMs: input.delayMs, error },
      caller,
    ) as Promise<ReleaseOutcome>;
  }

  cancel(caller: unknown, key: QueueKey, taskId: string): Promise<CancelOutcome> {
    const outcome = this.lateSeal(key, "result", taskId, { error: cancelledError(taskId), meta: {} }, caller);
    return this.route({ op: "cancel", key, taskId, outcome }, caller) as Promise<CancelOutcome>;
  }

  /** Seals `value` for `field` when the owner keeps it, or before a forward (see LateSeal). */
  private lateSeal(
    key: QueueKey,
    field: string,
    taskId: string | undefined,
    value: unknown,
    caller: unknown,
  ): LateSeal {
    return lateSeal(context => this.codec.seal(context, json(value), caller), key, field, taskId);
  }

  /** Opens a sealed field of a task (bound to the task, or to "*" when sealed before it was known). */
  private async openField(caller: unknown, key: QueueKey, taskId: string, field: string, s: Sealed): Promise<unknown> {
    return unjson(await openField((c, b) => this.codec.open(c, b, caller), key, taskId, field, s));
  }

  async dead(caller: unknown, key: QueueKey, limit: number): Promise<DeadTask[]> {
    const list = (await this.route({ op: "dead", key, limit }, caller)) as DeadEntry[];
    return Promise.all(
      list.map(async d => ({
        taskId: d.taskId,
        attempt: d.attempt,
        reason: d.reason,
        expiresAt: d.expiresAt,
        error: d.error ? await this.openField(caller, key, d.taskId, "error", d.error) : undefined,
      })),
    );
  }

  redrive(caller: unknown, key: QueueKey, taskIds?: string[]): Promise<number> {
    return this.route({ op: "redrive", key, taskIds }, caller) as Promise<number>;
  }

  purge(caller: unknown, key: QueueKey): Promise<number> {
    return this.route({ op: "purge", key }, caller) as Promise<number>;
  }

  /** A task's status, with its latest progress decrypted for the caller when it has one. */
  async status(caller: unknown, key: QueueKey, taskId: string): Promise<TaskStatus & { progress?: unknown }> {
    const found = (await this.route({ op: "status", key, taskId }, caller)) as {
      status: TaskStatus;
      progress?: Inspected["progress"];
    };
    if (!found.progress) return found.status;
    const progress = await this.openField(caller, key, taskId, "progress", found.progress);
    return { ...found.status, progress };
  }

  stats(caller: unknown, key: QueueKey): Promise<QueueStats> {
    return this.route({ op: "stats", key }, caller) as Promise<QueueStats>;
  }

  /** Tasks of a queue, a page at a time, metadata only. */
  tasks(
    caller: unknown,
    key: QueueKey,
    page: { state?: PublicState; offset: number; limit: number },
  ): Promise<{ total: number; tasks: TaskStatus[] }> {
    return this.route({ op: "tasks", key, ...page }, caller) as Promise<{ total: number; tasks: TaskStatus[] }>;
  }

  /** One task with its value, progress and last error decrypted for the caller (its owner). */
  async inspect(
    caller: unknown,
    key: QueueKey,
    taskId: string,
  ): Promise<TaskStatus & { value?: unknown; progress?: unknown; error?: unknown }> {
    const found = (await this.route({ op: "inspect", key, taskId }, caller)) as Inspected;
    const open = async (field: string, s: Inspected["value"]) =>
      s ? await this.openField(caller, key, taskId, field, s) : undefined;
    return {
      ...found.status,
      value: await open("value", found.value),
      progress: await open("progress", found.progress),
      error: await open("error", found.error),
    };
  }

  /** The owner's queues (those that saw an add within the retention). */
  queues(ownerId: string): Promise<{ serviceId: string; seenAt: number }[]> {
    return this.store.listQueues(ownerId);
  }

  private async register(key: QueueKey): Promise<void> {
    const now = Date.now();
    if (now - (this.registered.get(key.id) ?? 0) < 3_600_000) return;
    await this.store.registerQueue(key.ownerId, key.serviceId);
    this.registered.set(key.id, now);
  }

  /** Whether Cassandra answers, and what this node serves. */
  async health(): Promise<{ cassandra: boolean; latencyMs: number; error?: string; ownedQueues: string[] }> {
    const t0 = performance.now();
    try {
      await this.store.ping();
      return { cassandra: true, latencyMs: performance.now() - t0, ownedQueues: this.ownedQueues() };
    } catch (err) {
      return {
        cassandra: false,
        latencyMs: performance.now() - t0,
        error: (err as Error).message,
        ownedQueues: this.ownedQueues(),
      };
    }
  }

  // ---- routing -----------------------------------------------------------------------------------

  /** Runs a request where its queue is served; a Cassandra failure becomes a typed storage error. */
  private route(request: QueueRequest, caller: unknown): Promise<unknown> {
    return this.router.route(request, caller).catch((err: unknown) => {
      throw asStorageError(request.op, err);
    });
  }

  /** Runs a request that another node forwarded here. */
  async executeForwarded(request: WireRequest): Promise<unknown> {
    try {
      return await this.router.executeForwarded(request);
    } catch (err) {
      throw asStorageError(request.op, err);
    }
  }

  /**
   * Queues with workflow outcomes waiting to be handed over get no calls of their own (the workflow
   * is waiting for them): when their owner is gone, some live node must take them over.
   */
  private async adoptOrphans(): Promise<void> {
    try {
      for (const { ownerId, serviceId } of await this.store.listPendingHandovers()) {
        const key = queueKey(ownerId, serviceId);
        if (this.host.get(key)) continue;
        const row = await this.store.readOwner(key.id);
        if (row && row.node !== "" && this.membership.isAlive(row.node)) continue;
        await this.route({ op: "stats", key }, undefined).catch(err =>
          this.cluster.logger.debug(`adopting ${key.id} failed: ${(err as Error).message}`),
        );
      }
    } catch (err) {
      this.cluster.logger.debug(`scanning for orphaned hand-overs failed: ${(err as Error).message}`);
    }
  }
}

const transientCodes = new Set<number>([
  types.responseErrorCodes.unavailableException,
  types.responseErrorCodes.overloaded,
  types.responseErrorCodes.isBootstrapping,
  types.responseErrorCodes.writeTimeout,
  types.responseErrorCodes.readTimeout,
  types.responseErrorCodes.readFailure,
  types.responseErrorCodes.writeFailure,
  types.responseErrorCodes.truncateError,
]);

/**
 * Cassandra failures as the queue's own errors: unreachable, overloaded, timing out or a dropped
 * connection is a retryable STORAGE_UNAVAILABLE; anything else from the driver a STORAGE_ERROR.
 */
export function asStorageError(operation: string, err: unknown): unknown {
  if (err instanceof errors.ResponseError) {
    return transientCodes.has(err.code)
      ? new StorageUnavailableError(operation, err.message)
      : new StorageError(operation, err.message);
  }
  if (
    err instanceof errors.NoHostAvailableError ||
    err instanceof errors.OperationTimedOutError ||
    err instanceof errors.BusyConnectionError ||
    (err instanceof errors.DriverError &&
      !(err instanceof errors.ArgumentError) &&
      !(err instanceof errors.NotSupportedError))
  ) {
    return new StorageUnavailableError(operation, (err as Error).message);
  }
  return err;
}
