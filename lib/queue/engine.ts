/**
 * QueueEngine: the entry points of add / fetch / ack on any node. It seals and opens values with
 * the caller's context, finds the queue's owner, runs the operation on the local shard or forwards
 * it, acquires queues nobody serves, renews its leases, hands results over to the workflow, and
 * releases its queues on stop. It knows nothing of Moleculer: the service gives it a `Cluster`.
 */
import { errors, types, type Client } from "cassandra-driver";
import type { Sealed, SealContext, ValueCodec } from "../codec";
import { NotOwnerError, OwnershipLostError, StorageUnavailableError } from "../errors";
import type { EventLog } from "./event-log";
import { defaultEngineOptions, type QueueEngineOptions } from "./options";
import type { OwnerLease } from "./owner-lease";
import type { QueueShard } from "./queue-shard";
import { migrateSchema } from "./schema";
import { QueueStore } from "./store";
import { ownedElsewhere, takeOver } from "./takeover";
import type {
  AckOutcome,
  PublicState,
  QueueStats,
  ReleaseOutcome,
  Task,
  TaskEventType,
  TaskStatus,
  UpdateOutcome,
} from "./task";
import type { ShardHooks } from "./queue-shard";

/** Sealed bytes as they cross the network between nodes. */
export interface WireSealed {
  keyId: string;
  blob: string;
}

export type ShardRequest =
  | {
      op: "add";
      queue: string;
      taskId: string;
      clientId: boolean;
      value: WireSealed;
      token?: WireSealed;
      expiresAt: number;
      notBefore?: number;
      maxAttempts: number;
    }
  | { op: "fetch"; queue: string; worker: string; timeToRecoverMs: number; waitMs: number }
  | { op: "ack"; queue: string; worker: string; taskId?: string; failed: boolean; outcome: unknown }
  | { op: "update"; queue: string; worker: string; taskId?: string; progress?: unknown }
  | { op: "release"; queue: string; worker: string; taskId?: string; delayMs: number; error?: unknown }
  | { op: "cancel"; queue: string; taskId: string }
  | { op: "dead"; queue: string; limit: number }
  | { op: "redrive"; queue: string; taskIds?: string[] }
  | { op: "purge"; queue: string }
  | { op: "status"; queue: string; taskId: string }
  | { op: "stats"; queue: string }
  | { op: "tasks"; queue: string; state?: PublicState; offset: number; limit: number }
  | { op: "inspect"; queue: string; taskId: string };

export interface WireDelivery {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled: boolean;
  value: WireSealed;
}

export interface WireDeadTask {
  taskId: string;
  attempt: number;
  reason?: string;
  error?: WireSealed;
  expiresAt: number;
}

export interface DeadTask {
  taskId: string;
  attempt: number;
  reason?: string;
  error?: unknown;
  expiresAt: number;
}

/** A notification about a task: metadata only, never its value. */
export interface TaskEvent {
  type: TaskEventType;
  ownerId: string;
  serviceId: string;
  taskId: string;
  attempt: number;
  [extra: string]: unknown;
}

/** What the engine needs from the cluster it runs in (implemented by the Moleculer service). */
export interface Cluster {
  readonly nodeId: string;
  isNodeAvailable(nodeId: string): boolean;
  /** Runs the request on `nodeId` (which calls `QueueEngine.executeForwarded` there). */
  forward(nodeId: string, request: ShardRequest, caller: unknown): Promise<unknown>;
  /** Calls the workflow's activity service; resolves when it accepted the result. */
  completeWorkflow(input: {
    ownerId: string;
    taskId: string;
    token: unknown;
    result: unknown;
    error: unknown;
    meta: unknown;
  }): Promise<void>;
  /** Publishes a task event (the service emits it as a Moleculer event and counts it in metrics). */
  publish(event: TaskEvent): void;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; debug(...a: unknown[]): void };
}

export interface FetchedTask {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled: boolean;
  value: unknown;
}

interface Owned {
  shard: QueueShard;
  lease: OwnerLease;
  log: EventLog;
  timer: NodeJS.Timeout;
}

const toWire = (s: Sealed): WireSealed => ({ keyId: s.keyId, blob: s.blob.toString("base64") });
const fromWire = (w: WireSealed): Sealed => ({ keyId: w.keyId, blob: Buffer.from(w.blob, "base64") });

/** The queue key: owners never share a queue, even with the same serviceId. */
export function queueKey(ownerId: string, serviceId: string): string {
  return `${ownerId}/${serviceId}`;
}

function splitQueueKey(queue: string): { ownerId: string; serviceId: string } {
  const i = queue.lastIndexOf("/");
  return { ownerId: queue.slice(0, i), serviceId: queue.slice(i + 1) };
}

function sealContext(queue: string, taskId: string, field: string): SealContext {
  const { ownerId, serviceId } = splitQueueKey(queue);
  return { ownerId, queue: serviceId, taskId, field };
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v === undefined ? null : v), "utf8");
const unjson = (b: Buffer): unknown => JSON.parse(b.toString("utf8"));

export class QueueEngine {
  readonly options: QueueEngineOptions;
  readonly store: QueueStore;
  private readonly owned = new Map<string, Owned>();
  private readonly acquiring = new Map<string, Promise<Owned | { owner: string }>>();
  private readonly routes = new Map<string, string>();
  /** When this node last wrote each queue's owner_queues row (rewritten hourly, not on every add). */
  private readonly registered = new Map<string, number>();
  private stopped = false;

  constructor(
    private readonly client: Client,
    private readonly cluster: Cluster,
    private readonly codec: ValueCodec,
    options: Partial<QueueEngineOptions> = {},
  ) {
    this.options = { ...defaultEngineOptions, ...options };
    this.store = new QueueStore(client, this.options.keyspace, this.options.retentionSeconds, this.options.serialScope);
  }

  async start(): Promise<void> {
    await migrateSchema(this.client, this.options);
  }

  /** Hands every owned queue over (flushing first) so other nodes can take them at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.owned.keys()].map(q => this.releaseQueue(q)));
  }

  /** Queues this node serves now. */
  ownedQueues(): string[] {
    return [...this.owned.keys()];
  }

  /** Ready tasks per queue this node serves, for the depth gauge. */
  ownedDepths(): { serviceId: string; ready: number }[] {
    return [...this.owned].map(([queue, o]) => ({
      serviceId: splitQueueKey(queue).serviceId,
      ready: o.shard.stats().ready,
    }));
  }

  // ---- entry points (any node) -----------------------------------------------------------------

  async add(
    caller: unknown,
    queue: string,
    input: {
      taskId: string;
      clientId: boolean;
      value: unknown;
      token?: unknown;
      notBefore?: number;
      maxAttempts?: number;
    },
  ): Promise<void> {
    const value = await this.codec.seal(sealContext(queue, input.taskId, "value"), json(input.value), caller);
    const token =
      input.token === undefined
        ? undefined
        : await this.codec.seal(sealContext(queue, input.taskId, "token"), json(input.token), caller);
    await this.route(
      {
        op: "add",
        queue,
        taskId: input.taskId,
        clientId: input.clientId,
        value: toWire(value),
        token: token && toWire(token),
        expiresAt: Date.now() + this.options.retentionSeconds * 1000,
        notBefore: input.notBefore,
        maxAttempts: input.maxAttempts ?? this.options.maxAttempts,
      },
      caller,
    );
  }

  async fetch(
    caller: unknown,
    queue: string,
    worker: string,
    timeToRecoverMs: number,
    waitMs = 0,
  ): Promise<FetchedTask | null> {
    const d = (await this.route(
      { op: "fetch", queue, worker, timeToRecoverMs, waitMs },
      caller,
    )) as WireDelivery | null;
    if (!d) return null;
    const plain = await this.codec.open(sealContext(queue, d.taskId, "value"), fromWire(d.value), caller);
    return {
      taskId: d.taskId,
      attempt: d.attempt,
      leaseUntil: d.leaseUntil,
      cancelled: d.cancelled,
      value: unjson(plain),
    };
  }

  /** `outcome` is { result, error, meta }: sealed and kept only for tasks with a workflow token. */
  async ack(
    caller: unknown,
    queue: string,
    worker: string,
    taskId: string | undefined,
    outcome: { result?: unknown; error?: unknown; meta?: unknown },
  ): Promise<AckOutcome> {
    const failed = outcome.error !== undefined && outcome.error !== null;
    return (await this.route({ op: "ack", queue, worker, taskId, failed, outcome }, caller)) as AckOutcome;
  }

  update(caller: unknown, queue: string, worker: string, taskId?: string, progress?: unknown): Promise<UpdateOutcome> {
    return this.route({ op: "update", queue, worker, taskId, progress }, caller) as Promise<UpdateOutcome>;
  }

  release(
    caller: unknown,
    queue: string,
    worker: string,
    input: { taskId?: string; delayMs: number; error?: unknown },
  ): Promise<ReleaseOutcome> {
    return this.route({ op: "release", queue, worker, ...input }, caller) as Promise<ReleaseOutcome>;
  }

  cancel(caller: unknown, queue: string, taskId: string): Promise<{ ok: boolean; state: string; taskId: string }> {
    return this.route({ op: "cancel", queue, taskId }, caller) as Promise<{
      ok: boolean;
      state: string;
      taskId: string;
    }>;
  }

  async dead(caller: unknown, queue: string, limit: number): Promise<DeadTask[]> {
    const list = (await this.route({ op: "dead", queue, limit }, caller)) as WireDeadTask[];
    return Promise.all(
      list.map(async d => ({
        taskId: d.taskId,
        attempt: d.attempt,
        reason: d.reason,
        expiresAt: d.expiresAt,
        error: d.error
          ? unjson(await this.codec.open(sealContext(queue, d.taskId, "error"), fromWire(d.error), caller))
          : undefined,
      })),
    );
  }

  redrive(caller: unknown, queue: string, taskIds?: string[]): Promise<number> {
    return this.route({ op: "redrive", queue, taskIds }, caller) as Promise<number>;
  }

  purge(caller: unknown, queue: string): Promise<number> {
    return this.route({ op: "purge", queue }, caller) as Promise<number>;
  }

  status(caller: unknown, queue: string, taskId: string): Promise<TaskStatus> {
    return this.route({ op: "status", queue, taskId }, caller) as Promise<TaskStatus>;
  }

  stats(caller: unknown, queue: string): Promise<QueueStats> {
    return this.route({ op: "stats", queue }, caller) as Promise<QueueStats>;
  }

  /** Live tasks of a queue, a page at a time, metadata only. */
  tasks(
    caller: unknown,
    queue: string,
    page: { state?: PublicState; offset: number; limit: number },
  ): Promise<{ total: number; tasks: TaskStatus[] }> {
    return this.route({ op: "tasks", queue, ...page }, caller) as Promise<{ total: number; tasks: TaskStatus[] }>;
  }

  /** One task with its value, progress and last error decrypted for the caller (its owner). */
  async inspect(
    caller: unknown,
    queue: string,
    taskId: string,
  ): Promise<TaskStatus & { value?: unknown; progress?: unknown; error?: unknown }> {
    const found = (await this.route({ op: "inspect", queue, taskId }, caller)) as {
      status: TaskStatus;
      value?: WireSealed;
      progress?: WireSealed;
      error?: WireSealed;
    };
    const open = async (field: string, w?: WireSealed) =>
      w ? unjson(await this.codec.open(sealContext(queue, taskId, field), fromWire(w), caller)) : undefined;
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

  private async register(queue: string): Promise<void> {
    const now = Date.now();
    if (now - (this.registered.get(queue) ?? 0) < 3_600_000) return;
    const { ownerId, serviceId } = splitQueueKey(queue);
    await this.store.registerQueue(ownerId, serviceId);
    this.registered.set(queue, now);
    if (this.registered.size > 100_000) this.registered.delete(this.registered.keys().next().value as string);
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

  // ---- routing ---------------------------------------------------------------------------------

  /** Runs a request where its queue is served; a transient Cassandra failure becomes STORAGE_UNAVAILABLE. */
  private async route(request: ShardRequest, caller: unknown): Promise<unknown> {
    try {
      return await this.routeOnce(request, caller);
    } catch (err) {
      throw asStorageError(request.op, err);
    }
  }

  private async routeOnce(request: ShardRequest, caller: unknown): Promise<unknown> {
    const { queue } = request;
    let lastError: unknown;
    for (let hop = 0; hop < 6; hop++) {
      if (hop > 1) await new Promise(r => setTimeout(r, 20 * hop));
      const local = this.owned.get(queue);
      if (local) {
        try {
          return await this.runLocal(local, request, caller);
        } catch (err) {
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          continue;
        }
      }
      const target = await this.resolveOwner(queue);
      if (target === this.cluster.nodeId) {
        let got: Owned | { owner: string };
        try {
          got = await this.acquire(queue);
        } catch (err) {
          // A takeover that lost a race with another one: look again who owns the queue.
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          this.routes.delete(queue);
          continue;
        }
        if ("owner" in got) {
          this.routes.set(queue, got.owner);
          continue;
        }
        try {
          return await this.runLocal(got, request, caller);
        } catch (err) {
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          continue;
        }
      }
      try {
        return await this.cluster.forward(target, request, caller);
      } catch (err) {
        lastError = err;
        const type = (err as { type?: string }).type;
        if (type === "QUEUE_NOT_OWNER") {
          const owner = (err as { data?: { owner?: string | null } }).data?.owner;
          if (owner && owner !== target) this.routes.set(queue, owner);
          else this.routes.delete(queue);
          continue;
        }
        if (type === "QUEUE_OWNERSHIP_LOST" || isUnreachable(err)) {
          this.routes.delete(queue);
          continue;
        }
        throw err;
      }
    }
    throw lastError instanceof Error ? lastError : new OwnershipLostError(queue, "no owner could be reached");
  }

  /** The node that should serve the queue: the one named in queue_owner if alive, else this one. */
  private async resolveOwner(queue: string): Promise<string> {
    const cached = this.routes.get(queue);
    if (cached && cached !== this.cluster.nodeId && this.cluster.isNodeAvailable(cached)) return cached;
    const row = await this.store.readOwner(queue);
    if (row && ownedElsewhere(row, this.cluster)) {
      this.routes.set(queue, row.node);
      return row.node;
    }
    this.routes.delete(queue);
    return this.cluster.nodeId;
  }

  /** Runs a request that another node forwarded here. */
  async executeForwarded(request: ShardRequest, caller: unknown): Promise<unknown> {
    try {
      return await this.executeHere(request, caller);
    } catch (err) {
      throw asStorageError(request.op, err);
    }
  }

  private async executeHere(request: ShardRequest, caller: unknown): Promise<unknown> {
    let owned = this.owned.get(request.queue);
    if (!owned) {
      const got = await this.acquire(request.queue);
      if ("owner" in got) throw new NotOwnerError(request.queue, got.owner || null);
      owned = got;
    }
    return this.runLocal(owned, request, caller);
  }

  private async runLocal(owned: Owned, request: ShardRequest, caller: unknown): Promise<unknown> {
    const { shard } = owned;
    switch (request.op) {
      case "add": {
        if (request.clientId && !shard.has(request.taskId)) {
          if ((await this.store.readTaskIndex(request.queue, request.taskId)) !== null) return true;
        }
        await shard.add({
          taskId: request.taskId,
          clientId: request.clientId,
          value: fromWire(request.value),
          token: request.token && fromWire(request.token),
          expiresAt: request.expiresAt,
          notBefore: request.notBefore,
          maxAttempts: request.maxAttempts,
        });
        if (request.clientId) {
          await this.store.writeTaskIndex(request.queue, request.taskId, 0, request.expiresAt);
        }
        await this.register(request.queue);
        return true;
      }
      case "fetch": {
        const d = await shard.fetch(request.worker, request.timeToRecoverMs, request.waitMs);
        return (
          d && {
            taskId: d.taskId,
            attempt: d.attempt,
            leaseUntil: d.leaseUntil,
            cancelled: d.cancelled,
            value: toWire(d.value),
          }
        );
      }
      case "ack":
        return shard.ack(request.worker, request.taskId, request.failed, (t: Task) =>
          this.seal(request.queue, t, "result", request.outcome, caller),
        );
      case "update":
        return shard.update(
          request.worker,
          request.taskId,
          request.progress === undefined
            ? undefined
            : (t: Task) => this.seal(request.queue, t, "progress", request.progress, caller),
        );
      case "release":
        return shard.release(
          request.worker,
          request.taskId,
          request.delayMs,
          request.error === undefined
            ? undefined
            : (t: Task) => this.seal(request.queue, t, "error", request.error, caller),
        );
      case "cancel":
        return shard.cancel(request.taskId, (t: Task) =>
          this.seal(request.queue, t, "result", { error: cancelledError(t.id), meta: {} }, caller),
        );
      case "dead":
        return shard.deadTasks(request.limit).map((t): WireDeadTask => ({
          taskId: t.id,
          attempt: t.attempt,
          reason: t.reason,
          error: t.error && toWire(t.error),
          expiresAt: t.expiresAt,
        }));
      case "redrive":
        return shard.redrive(request.taskIds);
      case "purge":
        return shard.purge();
      case "status":
        return shard.status(request.taskId);
      case "stats":
        return shard.stats();
      case "tasks":
        return shard.listTasks(request.state, request.offset, request.limit);
      case "inspect": {
        const found = shard.inspect(request.taskId);
        return {
          status: found.status,
          value: found.value && toWire(found.value),
          progress: found.progress && toWire(found.progress),
          error: found.error && toWire(found.error),
        };
      }
    }
  }

  private seal(queue: string, t: Task, field: string, value: unknown, caller: unknown): Promise<Sealed> {
    return this.codec.seal(sealContext(queue, t.id, field), json(value), caller);
  }

  private hooksFor(queue: string): ShardHooks {
    const { ownerId, serviceId } = splitQueueKey(queue);
    return {
      handover: t => this.scheduleHandover(queue, t, 0),
      notify: (type: TaskEventType, t: Task, extra?: Record<string, unknown>) =>
        this.cluster.publish({ type, ownerId, serviceId, taskId: t.id, attempt: t.attempt, ...extra }),
    };
  }

  // ---- ownership -------------------------------------------------------------------------------

  private acquire(queue: string): Promise<Owned | { owner: string }> {
    const existing = this.owned.get(queue);
    if (existing) return Promise.resolve(existing);
    let pending = this.acquiring.get(queue);
    if (!pending) {
      pending = this.doAcquire(queue).finally(() => this.acquiring.delete(queue));
      this.acquiring.set(queue, pending);
    }
    return pending;
  }

  private async doAcquire(queue: string): Promise<Owned | { owner: string }> {
    if (this.stopped) return { owner: "" };
    const result = await takeOver(queue, {
      store: this.store,
      options: this.options,
      nodeId: this.cluster.nodeId,
      isNodeAvailable: id => this.cluster.isNodeAvailable(id),
      hooks: q => this.hooksFor(q),
      onFailure: (q, reason) => this.abandon(q, reason),
      onRollover: q =>
        void this.owned
          .get(q)
          ?.shard.maintain()
          .catch(err => this.abandon(q, String(err))),
    });
    if ("owner" in result) return result;
    const timer = setInterval(() => void this.tick(queue), Math.max(50, this.options.ownerLeaseMs / 3));
    timer.unref();
    const owned: Owned = { ...result, timer };
    this.owned.set(queue, owned);
    this.routes.delete(queue);
    this.cluster.logger.info(`Queue ${queue} taken over by ${this.cluster.nodeId} (range ${result.lease.rangeId})`);
    for (const t of result.shard.pendingHandovers()) this.scheduleHandover(queue, t, 0);
    return owned;
  }

  private async tick(queue: string): Promise<void> {
    const owned = this.owned.get(queue);
    if (!owned) return;
    owned.shard.dropExpired();
    if (Date.now() - owned.shard.lastUsed > this.options.idleReleaseMs && owned.shard.pendingHandovers().length === 0) {
      await this.releaseQueue(queue);
      return;
    }
    try {
      await owned.lease.renew();
    } catch (err) {
      this.abandon(queue, `lease renewal failed: ${(err as Error).message}`);
    }
  }

  /** Drops the queue from this node after a failed write or a lost lease; the next call re-acquires. */
  private abandon(queue: string, reason: string): void {
    const owned = this.owned.get(queue);
    if (!owned) return;
    this.owned.delete(queue);
    clearInterval(owned.timer);
    owned.lease.markLost(reason);
    const lost = new OwnershipLostError(queue, reason);
    owned.log.fail(lost);
    owned.shard.close(lost);
    this.cluster.logger.warn(`Queue ${queue} abandoned by ${this.cluster.nodeId}: ${reason}`);
  }

  private async releaseQueue(queue: string): Promise<void> {
    const owned = this.owned.get(queue);
    if (!owned) return;
    this.owned.delete(queue);
    clearInterval(owned.timer);
    owned.shard.close(new OwnershipLostError(queue, "released"));
    try {
      await owned.log.drain();
      await owned.lease.release();
    } catch (err) {
      this.cluster.logger.warn(`Queue ${queue} could not be released cleanly: ${(err as Error).message}`);
    }
    owned.log.fail(new OwnershipLostError(queue, "released"));
  }

  // ---- workflow hand-over ----------------------------------------------------------------------

  private scheduleHandover(queue: string, task: Task, attempt: number): void {
    const delay =
      attempt === 0 ? 0 : Math.min(this.options.handoverMaxDelayMs, this.options.handoverRetryMs * 2 ** (attempt - 1));
    const timer = setTimeout(() => void this.handOver(queue, task, attempt), delay);
    timer.unref();
  }

  private async handOver(queue: string, task: Task, attempt: number): Promise<void> {
    const owned = this.owned.get(queue);
    if (!owned || !task.token || !task.result) return; // the next owner hands it over
    try {
      const { ownerId } = splitQueueKey(queue);
      const token = unjson(await this.codec.open(sealContext(queue, task.id, "token"), task.token));
      const outcome = unjson(await this.codec.open(sealContext(queue, task.id, "result"), task.result)) as {
        result?: unknown;
        error?: unknown;
        meta?: unknown;
      } | null;
      await this.cluster.completeWorkflow({
        ownerId,
        taskId: task.id,
        token,
        result: outcome?.result,
        error: outcome?.error,
        meta: outcome?.meta,
      });
      await owned.shard.handed(task);
    } catch (err) {
      if (err instanceof OwnershipLostError) return;
      this.cluster.logger.warn(
        `Hand-over of task ${task.id} in ${queue} failed (attempt ${attempt + 1}), will retry: ${(err as Error).message}`,
      );
      this.scheduleHandover(queue, task, attempt + 1);
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
]);

/** Cassandra unreachable, overloaded or timing out: a retryable STORAGE_UNAVAILABLE; anything else as it is. */
function asStorageError(operation: string, err: unknown): unknown {
  const transient =
    err instanceof errors.NoHostAvailableError ||
    err instanceof errors.OperationTimedOutError ||
    err instanceof errors.BusyConnectionError ||
    (err instanceof errors.ResponseError && transientCodes.has(err.code));
  return transient ? new StorageUnavailableError(operation, (err as Error).message) : err;
}

/** What the workflow receives when a task with a token is cancelled. */
function cancelledError(taskId: string): { type: string; message: string; taskId: string } {
  return { type: "TASK_CANCELLED", message: "The task was cancelled", taskId };
}

/** A forward that failed because the target node is gone or did not answer. */
function isUnreachable(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return (
    name === "ServiceNotAvailableError" ||
    name === "ServiceNotFoundError" ||
    name === "RequestTimeoutError" ||
    name === "RequestRejectedError"
  );
}
