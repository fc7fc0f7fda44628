/**
 * QueueEngine: the entry points of add / fetch / ack on any node. It seals and opens values with
 * the caller's context, finds the queue's owner, runs the operation on the local shard or forwards
 * it, acquires queues nobody serves, renews its leases, hands results over to the workflow, and
 * releases its queues on stop. It knows nothing of Moleculer: the service gives it a `Cluster`.
 */
import type { Client } from "cassandra-driver";
import type { Sealed, SealContext, ValueCodec } from "../codec";
import { NotOwnerError, OwnershipLostError } from "../errors";
import type { EventLog } from "./event-log";
import { defaultEngineOptions, type QueueEngineOptions } from "./options";
import type { OwnerLease } from "./owner-lease";
import type { QueueShard } from "./queue-shard";
import { migrateSchema } from "./schema";
import { QueueStore } from "./store";
import { ownedElsewhere, takeOver } from "./takeover";
import type { AckOutcome, Delivery, Task } from "./task";

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
    }
  | { op: "fetch"; queue: string; worker: string; timeToRecoverMs: number }
  | { op: "ack"; queue: string; worker: string; taskId?: string; outcome: unknown };

export interface WireDelivery {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: WireSealed;
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
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; debug(...a: unknown[]): void };
}

export interface FetchedTask {
  taskId: string;
  attempt: number;
  leaseUntil: number;
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
    await Promise.allSettled([...this.owned.keys()].map(q => this.release(q)));
  }

  /** Queues this node serves now. */
  ownedQueues(): string[] {
    return [...this.owned.keys()];
  }

  // ---- entry points (any node) -----------------------------------------------------------------

  async add(
    caller: unknown,
    queue: string,
    input: { taskId: string; clientId: boolean; value: unknown; token?: unknown },
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
      },
      caller,
    );
  }

  async fetch(caller: unknown, queue: string, worker: string, timeToRecoverMs: number): Promise<FetchedTask | null> {
    const d = (await this.route({ op: "fetch", queue, worker, timeToRecoverMs }, caller)) as WireDelivery | null;
    if (!d) return null;
    const plain = await this.codec.open(sealContext(queue, d.taskId, "value"), fromWire(d.value), caller);
    return { taskId: d.taskId, attempt: d.attempt, leaseUntil: d.leaseUntil, value: unjson(plain) };
  }

  /** `outcome` is { result, error, meta }: sealed and kept only for tasks with a workflow token. */
  async ack(
    caller: unknown,
    queue: string,
    worker: string,
    taskId: string | undefined,
    outcome: unknown,
  ): Promise<AckOutcome> {
    return (await this.route({ op: "ack", queue, worker, taskId, outcome }, caller)) as AckOutcome;
  }

  // ---- routing ---------------------------------------------------------------------------------

  private async route(request: ShardRequest, caller: unknown): Promise<unknown> {
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
        const got = await this.acquire(queue);
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
        });
        if (request.clientId) {
          await this.store.writeTaskIndex(request.queue, request.taskId, 0, request.expiresAt);
        }
        return true;
      }
      case "fetch": {
        const d: Delivery | null = await shard.fetch(request.worker, request.timeToRecoverMs);
        return d && { taskId: d.taskId, attempt: d.attempt, leaseUntil: d.leaseUntil, value: toWire(d.value) };
      }
      case "ack":
        return shard.ack(request.worker, request.taskId, (t: Task) =>
          this.codec.seal(sealContext(request.queue, t.id, "result"), json(request.outcome), caller),
        );
    }
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
      onHandover: (q, t) => this.scheduleHandover(q, t, 0),
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
      await this.release(queue);
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
    owned.log.fail(new OwnershipLostError(queue, reason));
    this.cluster.logger.warn(`Queue ${queue} abandoned by ${this.cluster.nodeId}: ${reason}`);
  }

  private async release(queue: string): Promise<void> {
    const owned = this.owned.get(queue);
    if (!owned) return;
    this.owned.delete(queue);
    clearInterval(owned.timer);
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
