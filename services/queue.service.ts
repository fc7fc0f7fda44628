/**
 * The `worker.queue` service: validates parameters, establishes the owner of the call, and
 * delegates to the QueueEngine (lib/queue/engine.ts). The original interface is kept:
 * add -> true; fetch -> the held task's value or null; ack -> true / false. Job control
 * (update, release, cancel, dead, redrive, purge, status, stats, health) comes on top.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import type { ValueCodec } from "../lib/codec";
import { cassandraConfigFromEnv, connectCassandra } from "../lib/cassandra/client";
import { MoleculerKeyProvider } from "../lib/crypto/key-provider";
import { SodiumCodec } from "../lib/crypto/sodium-codec";
import {
  AccessDeniedError,
  ConfigurationError,
  InvalidParameterError,
  NotOwnerError,
  OwnerMissingError,
  ValueTooDeepError,
  ValueTooLargeError,
} from "../lib/errors";
import { grantCovers } from "../lib/http/access-token";
import { QueueEngine, type Cluster, type TaskEvent } from "../lib/queue/engine";
import { callerGrant, requireAclGuard, type AclGuard } from "../middleware/acl.middleware";
import type { Beat } from "../lib/queue/membership";
import type { QueueEngineOptions } from "../lib/queue/options";
import { queueKey } from "../lib/queue/queue-key";
import type { WireRequest } from "../lib/queue/wire";
import type { PublicState } from "../lib/queue/task";

export interface QueueServiceOptions {
  /** @defaultValue "worker.queue" */
  name?: string;
  /** Engine options (keyspace, retention, bucket sizes, owner lease, maxAttempts...). */
  engine?: Partial<QueueEngineOptions>;
  /** A Cassandra client to use; by default one is connected from the CASSANDRA_* environment. */
  client?: Client;
  /** How values are sealed; by default the owner-key encryption through the keys service. */
  codec?: (broker: ServiceBroker) => ValueCodec;
  /** The keys service giving owner keys (`getOek`). @defaultValue "keys" */
  keysService?: string;
  /** Service whose `completed` action receives workflow results. @defaultValue "flow.activity" */
  activityService?: string;
  /** Largest accepted value / result / progress / error, in bytes of JSON. @defaultValue 1 MiB */
  maxValueBytes?: number;
  /** Deepest accepted nesting of a value / result / progress / error (arrays and objects). @defaultValue 64 */
  maxValueDepth?: number;
  /** Longest accepted timeToRecover, in seconds. @defaultValue 86400 */
  maxTimeToRecover?: number;
  /** Emit task events (`<name>.task.<type>`, metadata only). @defaultValue true */
  events?: boolean;
  /**
   * Run without the ACL middleware, trusting `ctx.meta.ownerId` as given: only where every node of
   * the network is trusted. Otherwise the broker must have AclMiddleware guarding this service.
   * @defaultValue false
   */
  trustMeta?: boolean;
}

interface QueueMeta {
  ownerId?: string;
  acl?: { ownerId?: string };
  [key: string]: unknown;
}

type QueueContext<P> = Context<P, QueueMeta>;

interface AckParams {
  serviceId: string;
  workerId: string;
  taskId?: string;
  result?: unknown;
  error?: unknown;
  /** ackTask only: answer with the worker's next task too (fetched with `timeToRecover`). */
  next?: boolean;
  timeToRecover?: number;
}

interface FetchParams {
  serviceId: string;
  workerId: string;
  timeToRecover?: number;
  wait?: number;
}

/** Longest long poll, in seconds. */
export const MAX_WAIT_SECONDS = 20;

/** The owner of a call: set by the ACL middleware, or by the caller in one of the two usual places. */
export function ownerOf(ctx: QueueContext<unknown>): string {
  const owner = ctx.meta?.acl?.ownerId ?? ctx.meta?.ownerId;
  if (typeof owner !== "string" || owner === "") throw new OwnerMissingError(ctx.action?.name ?? "unknown");
  return owner;
}

/**
 * How deeply a JSON value nests, walked with an explicit stack (no recursion, so a hostile value
 * cannot exhaust the call stack); stops as soon as it passes `limit`.
 */
export function jsonDepthOver(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (depth > limit) return true;
    const children = Array.isArray(v) ? v : Object.values(v as Record<string, unknown>);
    for (const c of children) if (c !== null && typeof c === "object") stack.push([c, depth + 1]);
  }
  return false;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A forwarded request passed the entry node's validation, but the sender is only as honest as the
 * bus: the fields that name the queue or bound the work are checked again.
 */
function checkForwarded(request: WireRequest, maxTtrSeconds: number): void {
  const bad = (field: string, message: string) => new InvalidParameterError(`request.${field}`, message);
  if (typeof request.ownerId !== "string" || request.ownerId === "") throw bad("ownerId", "ownerId must be a string");
  if (typeof request.serviceId !== "string" || !UUID.test(request.serviceId)) {
    throw bad("serviceId", "serviceId must be a uuid");
  }
  const within = (field: string, max: number) => {
    const v = request[field];
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > max)) {
      throw bad(field, `${field} must be a number from 0 to ${max}`);
    }
  };
  within("waitMs", MAX_WAIT_SECONDS * 1000);
  within("timeToRecoverMs", maxTtrSeconds * 1000);
  within("limit", 10_000);
  within("offset", 1_000_000_000);
  if (request.next !== undefined) {
    const next = request.next as { timeToRecoverMs?: unknown } | null;
    const ttr = next?.timeToRecoverMs;
    if (typeof ttr !== "number" || !Number.isFinite(ttr) || ttr <= 0 || ttr > maxTtrSeconds * 1000) {
      throw bad(
        "next.timeToRecoverMs",
        `next.timeToRecoverMs must be a number above 0, at most ${maxTtrSeconds * 1000}`,
      );
    }
    if (typeof request.taskId !== "string") throw bad("taskId", "an ack with next must name its taskId");
  }
}

/** Size and depth of a JSON value: typed errors naming the field, before anything serializes it. */
function checkSize(field: string, value: unknown, limit: number, depthLimit: number): void {
  if (value === undefined) return;
  if (jsonDepthOver(value, depthLimit)) throw new ValueTooDeepError(field, depthLimit);
  const size = Buffer.byteLength(JSON.stringify(value) ?? "", "utf8");
  if (size > limit) throw new ValueTooLargeError(field, size, limit);
}

export function createQueueService(options: QueueServiceOptions = {}): ServiceSchema {
  const name = options.name ?? "worker.queue";
  const maxValueBytes = options.maxValueBytes ?? 1024 * 1024;
  const maxValueDepth = options.maxValueDepth ?? 64;
  const maxTtr = options.maxTimeToRecover ?? 86_400;
  const activity = options.activityService ?? "flow.activity";
  const emitEvents = options.events ?? true;
  /**
   * Whether anything in the network listens to a task event name, per name, until the registry
   * changes: an emit with no listener still builds a context and walks the event catalog (4-6 µs,
   * two per task in a drain), so events nobody subscribed to are not emitted at all.
   */
  const listened = new Map<string, boolean>();
  let engine: QueueEngine;
  let guard: AclGuard | undefined;
  /** Meta for calls this node makes for an owner of its own accord (with a grant of its own in grant mode). */
  const internalMeta = async (ownerId: string, services?: readonly string[]): Promise<Record<string, unknown>> =>
    guard ? guard.internalMeta(ownerId, services) : { ownerId, acl: { ownerId } };
  let ownClient: Client | undefined;
  let metricsTimer: NodeJS.Timeout | undefined;

  const serviceId = { type: "uuid" } as const;
  const workerId = { type: "string", min: 1, max: 256 } as const;
  const taskId = { type: "string", min: 1, max: 256 } as const;
  const optionalTaskId = { ...taskId, optional: true } as const;
  const fetchParams = {
    serviceId,
    workerId,
    timeToRecover: { type: "number", positive: true, max: maxTtr, optional: true, convert: true },
    wait: { type: "number", min: 0, max: MAX_WAIT_SECONDS, optional: true, convert: true },
  } as const;
  /** `taskId` (optional) makes the ack apply only to that task, so a late ack cannot complete a newer one. */
  const ackParams = {
    serviceId,
    workerId,
    taskId: optionalTaskId,
    result: { type: "any", optional: true },
    error: { type: "any", optional: true },
  } as const;
  const ackTaskParams = {
    ...ackParams,
    next: { type: "boolean", optional: true, convert: true },
    timeToRecover: fetchParams.timeToRecover,
  } as const;

  const queueOf = (ctx: QueueContext<{ serviceId: string }>) => queueKey(ownerOf(ctx), ctx.params.serviceId);
  // Operation counts for the metrics (one per call, by outcome); see `merged` below.
  function countError(this: { countOperation(a: string, o: string): void }, ctx: Context, err: Error): never {
    this.countOperation(
      String((ctx.action as { rawName?: string } | undefined)?.rawName ?? "unknown"),
      (err as { type?: string }).type ?? "ERROR",
    );
    throw err;
  }
  function countAfter(this: { countOperation(a: string, o: string): void }, ctx: Context, res: unknown): unknown {
    this.countOperation(String((ctx.action as { rawName?: string } | undefined)?.rawName ?? "unknown"), "ok");
    return res;
  }

  const fetchTask = (ctx: QueueContext<FetchParams>) =>
    engine.fetch(
      ctx,
      queueOf(ctx),
      ctx.params.workerId,
      (ctx.params.timeToRecover ?? 60) * 1000,
      (ctx.params.wait ?? 0) * 1000,
    );

  return {
    name,
    settings: { activityService: activity, maxValueBytes },
    actions: {
      add: {
        params: {
          serviceId,
          value: { type: "any" },
          token: { type: "object", optional: true },
          taskId: optionalTaskId,
          delay: { type: "number", min: 0, optional: true, convert: true },
          notBefore: { type: "number", min: 0, optional: true, convert: true },
          maxAttempts: { type: "number", integer: true, min: 0, optional: true, convert: true },
        },
        async handler(
          ctx: QueueContext<{
            serviceId: string;
            value: unknown;
            token?: object;
            taskId?: string;
            delay?: number;
            notBefore?: number;
            maxAttempts?: number;
          }>,
        ) {
          const queue = queueOf(ctx);
          const { value, token, delay, notBefore } = ctx.params;
          checkSize("value", value, maxValueBytes, maxValueDepth);
          checkSize("token", token, maxValueBytes, maxValueDepth);
          if (delay !== undefined && notBefore !== undefined) {
            throw new InvalidParameterError(
              "delay",
              "Give either delay (seconds) or notBefore (ms timestamp), not both",
            );
          }
          // A task due after its retention ends would never be delivered.
          const due = delay !== undefined ? Date.now() + delay * 1000 : notBefore;
          if (due !== undefined && due > Date.now() + engine.options.retentionSeconds * 1000) {
            throw new InvalidParameterError(
              delay !== undefined ? "delay" : "notBefore",
              `The task would be due after its retention (${engine.options.retentionSeconds} s) ends`,
            );
          }
          await engine.add(ctx, queue, {
            taskId: ctx.params.taskId ?? randomUUID(),
            clientId: ctx.params.taskId !== undefined,
            value,
            token,
            notBefore: due,
            maxAttempts: ctx.params.maxAttempts,
          });
          return true;
        },
      },
      fetch: {
        params: fetchParams,
        handler(ctx: QueueContext<FetchParams>) {
          return fetchTask(ctx).then(task => (task ? task.value : null));
        },
      },
      /** Like fetch, with what a worker needs: `{ taskId, attempt, leaseUntil, cancelled, value }` or null. */
      fetchTask: {
        params: fetchParams,
        handler: fetchTask,
      },
      ack: {
        params: ackParams,
        handler(ctx: QueueContext<AckParams>) {
          return this.ackOutcome(ctx).then((outcome: { ok: boolean }) => outcome.ok);
        },
      },
      /**
       * Like ack, saying why it failed: `{ ok: true, taskId }` or `{ ok: false, reason: "NO_TASK" | "LEASE_LOST" }`.
       * With `next: true`, also the worker's next task as fetchTask gives it (`next`, or null), from
       * the same call and usually the same commit: one call per task instead of two.
       */
      ackTask: {
        params: ackTaskParams,
        handler(ctx: QueueContext<AckParams>) {
          return this.ackOutcome(ctx, ctx.params.next === true);
        },
      },
      /** Heartbeat and progress: extends the lease, says whether the task was cancelled. */
      update: {
        params: { serviceId, workerId, taskId: optionalTaskId, progress: { type: "any", optional: true } },
        async handler(ctx: QueueContext<{ serviceId: string; workerId: string; taskId?: string; progress?: unknown }>) {
          checkSize("progress", ctx.params.progress, maxValueBytes, maxValueDepth);
          return engine.update(ctx, queueOf(ctx), ctx.params.workerId, ctx.params.taskId, ctx.params.progress);
        },
      },
      /** Gives the task back for another attempt after `delay` seconds; after maxAttempts it is dead. */
      release: {
        params: {
          serviceId,
          workerId,
          taskId: optionalTaskId,
          delay: { type: "number", min: 0, optional: true, convert: true },
          error: { type: "any", optional: true },
        },
        async handler(
          ctx: QueueContext<{ serviceId: string; workerId: string; taskId?: string; delay?: number; error?: unknown }>,
        ) {
          checkSize("error", ctx.params.error, maxValueBytes, maxValueDepth);
          const outcome = await engine.release(ctx, queueOf(ctx), ctx.params.workerId, {
            taskId: ctx.params.taskId,
            delayMs: (ctx.params.delay ?? 0) * 1000,
            error: ctx.params.error,
          });
          return outcome.ok;
        },
      },
      cancel: {
        params: { serviceId, taskId },
        async handler(ctx: QueueContext<{ serviceId: string; taskId: string }>) {
          return engine.cancel(ctx, queueOf(ctx), ctx.params.taskId);
        },
      },
      status: {
        params: { serviceId, taskId },
        async handler(ctx: QueueContext<{ serviceId: string; taskId: string }>) {
          return engine.status(ctx, queueOf(ctx), ctx.params.taskId);
        },
      },
      stats: {
        params: { serviceId },
        async handler(ctx: QueueContext<{ serviceId: string }>) {
          const stats = await engine.stats(ctx, queueOf(ctx));
          this.setDepth(ctx.params.serviceId, stats.ready);
          return stats;
        },
      },
      dead: {
        params: {
          serviceId,
          limit: { type: "number", integer: true, min: 1, max: 10_000, optional: true, convert: true },
        },
        async handler(ctx: QueueContext<{ serviceId: string; limit?: number }>) {
          return engine.dead(ctx, queueOf(ctx), ctx.params.limit ?? 1000);
        },
      },
      redrive: {
        params: { serviceId, taskIds: { type: "array", items: taskId, optional: true, max: 10_000 } },
        async handler(ctx: QueueContext<{ serviceId: string; taskIds?: string[] }>) {
          return { redriven: await engine.redrive(ctx, queueOf(ctx), ctx.params.taskIds) };
        },
      },
      purge: {
        params: { serviceId },
        async handler(ctx: QueueContext<{ serviceId: string }>) {
          return { purged: await engine.purge(ctx, queueOf(ctx)) };
        },
      },
      /** Live tasks, oldest first, optionally of one state, a page at a time (metadata only). */
      tasks: {
        params: {
          serviceId,
          state: {
            type: "enum",
            values: ["waiting", "delayed", "leased", "handing-over", "dead"],
            optional: true,
          },
          offset: { type: "number", integer: true, min: 0, optional: true, convert: true },
          limit: { type: "number", integer: true, min: 1, max: 1000, optional: true, convert: true },
        },
        async handler(ctx: QueueContext<{ serviceId: string; state?: PublicState; offset?: number; limit?: number }>) {
          return engine.tasks(ctx, queueOf(ctx), {
            state: ctx.params.state,
            offset: ctx.params.offset ?? 0,
            limit: ctx.params.limit ?? 50,
          });
        },
      },
      /** One live task with its value, progress and last error, decrypted for its owner. */
      inspect: {
        params: { serviceId, taskId },
        async handler(ctx: QueueContext<{ serviceId: string; taskId: string }>) {
          return engine.inspect(ctx, queueOf(ctx), ctx.params.taskId);
        },
      },
      /** The caller's queues (those that saw an add within the retention), each with its stats when asked. */
      queues: {
        params: { withStats: { type: "boolean", optional: true, convert: true } },
        async handler(ctx: QueueContext<{ withStats?: boolean }>) {
          const ownerId = ownerOf(ctx);
          const grant = callerGrant(ctx);
          // A grant for some of the owner's queues lists only those.
          const list = (await engine.queues(ownerId)).filter(q => !grant || grantCovers(grant, q.serviceId));
          if (!ctx.params.withStats) return list;
          return Promise.all(
            list.map(async q => ({ ...q, stats: await engine.stats(ctx, queueKey(ownerId, q.serviceId)) })),
          );
        },
      },
      /**
       * Whether Cassandra answers and how many queues this node serves; no owner needed. Which queues
       * (`<ownerId>/<serviceId>`) and the storage error only for an operator grant (`ops: true`).
       */
      health: {
        acl: "optional",
        async handler(ctx: QueueContext<unknown>) {
          const h = await engine.health();
          const counts = {
            nodeId: this.broker.nodeID,
            cassandra: h.cassandra,
            latencyMs: h.latencyMs,
            ownedQueueCount: h.ownedQueues.length,
          };
          // Without the ACL middleware (trustMeta), every caller is trusted.
          const operator = callerGrant(ctx)?.ops === true || (guard === undefined && options.trustMeta === true);
          return operator ? { ...counts, ...h } : counts;
        },
      },
      /**
       * Internal: a request forwarded by another queue node to this queue's owner. The entry node
       * has validated it and run the ACL; here only queue nodes may call, for the caller's own queues.
       */
      shardExec: {
        visibility: "public",
        params: { request: { type: "object" } },
        async handler(ctx: QueueContext<{ request: WireRequest }>) {
          const request = ctx.params.request;
          checkForwarded(request, maxTtr);
          const queue = `${String(request.ownerId)}/${String(request.serviceId)}`;
          const callerIsQueueNode = await this.isQueueNode(ctx.nodeID ?? this.broker.nodeID);
          if (callerIsQueueNode === "no") {
            throw new AccessDeniedError({ action: "shardExec", reason: "only queue nodes forward requests" });
          }
          // A caller this node cannot see (e.g. it was paused and lost track of the others): decline, retryably.
          if (callerIsQueueNode === "unknown") throw new NotOwnerError(queue, null);
          // The ACL middleware verified the caller's grant here too: it must be for this very queue.
          const grant = callerGrant(ctx);
          if (request.ownerId !== ownerOf(ctx) || (grant && !grantCovers(grant, String(request.serviceId)))) {
            throw new AccessDeniedError({ action: "shardExec", reason: "the queue is not the caller's" });
          }
          return engine.executeForwarded(request);
        },
      },
    },
    events: {
      /** Another queue node is alive (and owns this many queues), or leaves. */
      [`${name}.node.beat`](ctx: Context<Beat>) {
        // A beat speaks only for its sender: one naming another node is a forgery.
        if (ctx.nodeID !== this.broker.nodeID && ctx.params?.nodeId === ctx.nodeID) engine?.beatReceived(ctx.params);
      },
      /** A service came or went somewhere (listeners of task events among them): ask again. */
      "$services.changed"() {
        listened.clear();
      },
      "$node.disconnected"(ctx: Context<{ node: { id: string } }>) {
        // Only this broker's own registry event: a remote node may broadcast a forged one.
        if (ctx.nodeID !== undefined && ctx.nodeID !== this.broker.nodeID) return;
        engine?.nodeDisconnected(ctx.params.node.id);
      },
    },
    hooks: { error: { "*": countError }, after: { "*": countAfter } },
    /**
     * Without metrics the counting hooks would only cost every call a few promises: left out (from
     * this schema object, which, like the engine, belongs to one broker).
     */
    merged(this: Service, schema: ServiceSchema) {
      if (this.broker.isMetricsEnabled()) return;
      const hooks = schema.hooks as { error?: Record<string, unknown>; after?: Record<string, unknown> } | undefined;
      if (hooks?.error?.["*"] === countError) delete hooks.error["*"];
      if (hooks?.after?.["*"] === countAfter) delete hooks.after["*"];
    },
    methods: {
      /** The ack; with `withNext`, also the worker's next task (the engine requires the taskId then). */
      async ackOutcome(ctx: QueueContext<AckParams>, withNext = false) {
        checkSize("result", ctx.params.result, maxValueBytes, maxValueDepth);
        checkSize("error", ctx.params.error, maxValueBytes, maxValueDepth);
        const { workerId, taskId } = ctx.params;
        const acked = { result: ctx.params.result, error: ctx.params.error, meta: ctx.meta };
        const outcome = withNext
          ? await engine.ackThenFetch(
              ctx,
              queueOf(ctx),
              workerId,
              taskId,
              acked,
              (ctx.params.timeToRecover ?? 60) * 1000,
            )
          : await engine.ack(ctx, queueOf(ctx), workerId, taskId, acked);
        if (!outcome.ok) this.logger.debug(`ack by ${ctx.params.workerId} refused: ${outcome.reason}`);
        return outcome;
      },
      /**
       * Whether `nodeID` runs this service. A node not (yet, or no longer) known as available gets a
       * moment to announce itself; if it stays unknown, the answer is "unknown".
       */
      async isQueueNode(nodeID: string): Promise<"yes" | "no" | "unknown"> {
        const registry = (this.broker as ServiceBroker).registry;
        // A node that just started may be known before its queue service is (its services are
        // announced as they start): give it the same moment either way.
        for (let waited = 0; waited < 3000; waited += 50) {
          if (registry.hasService(name, nodeID)) return "yes";
          await new Promise(r => setTimeout(r, 50));
        }
        const node = registry.nodes.get(nodeID);
        return node?.available && node.services?.length ? "no" : "unknown";
      },
      countOperation(action: string, outcome: string) {
        if (action === "shardExec" || !this.broker.isMetricsEnabled()) return;
        this.broker.metrics.increment("queue.operations.total", { action, outcome });
      },
      setDepth(serviceId: string, ready: number) {
        if (this.broker.isMetricsEnabled()) this.broker.metrics.set("queue.depth", ready, { serviceId });
      },
      publish(event: TaskEvent) {
        const broker = this.broker as ServiceBroker;
        if (broker.isMetricsEnabled()) broker.metrics.increment("queue.task.events.total", { type: event.type });
        if (!emitEvents) return;
        const eventName = `${name}.task.${event.type}`;
        let wanted = listened.get(eventName);
        if (wanted === undefined) listened.set(eventName, (wanted = broker.hasEventListener(eventName)));
        if (wanted) void broker.emit(eventName, event);
      },
    },
    created() {
      const metrics = this.broker.isMetricsEnabled() ? this.broker.metrics : undefined;
      if (!metrics) return;
      metrics.register({
        name: "queue.operations.total",
        type: "counter",
        labelNames: ["action", "outcome"],
        description: "Queue actions by outcome",
      });
      metrics.register({
        name: "queue.task.events.total",
        type: "counter",
        labelNames: ["type"],
        description:
          "Task events: added, delivered, completed, failed, released, dead, cancelled, expired (lease expiries)",
      });
      metrics.register({
        name: "queue.depth",
        type: "gauge",
        labelNames: ["serviceId"],
        description: "Tasks ready for delivery in queues this node owns",
      });
    },
    async started() {
      const broker = this.broker as ServiceBroker;
      guard = requireAclGuard(broker, this.fullName ?? name, options.trustMeta === true);
      if (guard?.mode === "grant" && !guard.canSign) {
        throw new ConfigurationError(
          "ACL_GRANT_PRIVATE_KEY",
          "Queue nodes sign grants for their own work (hand-overs, adopting queues): with ACL_GRANT_PUBLIC_KEY set " +
            "ACL_GRANT_PRIVATE_KEY too, or use ACL_GRANT_SECRET",
        );
      }
      await guard?.checkSigning();
      const client = options.client ?? (ownClient = await connectCassandra(cassandraConfigFromEnv()));
      const codec = options.codec
        ? options.codec(broker)
        : new SodiumCodec(
            new MoleculerKeyProvider({
              broker,
              service: name,
              keysService: options.keysService,
              metaFor: internalMeta,
            }),
          );
      const cluster: Cluster = {
        nodeId: broker.nodeID,
        forward: async (nodeID, request, _caller, timeout) => {
          // Never the caller's own token: the node answering a forward is not authenticated by the
          // grant (only TRANSIT_KEY or the transporter's credentials keep impostors off the bus), so
          // it gets a one-minute grant of this node for this one queue.
          const meta = await internalMeta(String(request.ownerId), [String(request.serviceId)]);
          return broker.call(`${name}.shardExec`, { request }, { nodeID, timeout, meta });
        },
        beat: (beat: Beat) => void broker.broadcast(`${name}.node.beat`, beat, { groups: [name] }),
        queueNodes: () =>
          (broker.registry.getServiceList({ onlyAvailable: true }) as { name: string; nodeID: string }[])
            .filter(s => s.name === name)
            .map(s => s.nodeID),
        isNodeAvailable: id => broker.registry.nodes.get(id)?.available === true,
        completeWorkflow: async ({ ownerId, token, result, error, meta, taskId }) => {
          // The worker's grant was not kept with the outcome, and none goes to the activity service:
          // whoever provides it must not gain access to the owner's queues or keys.
          await broker.call(
            `${activity}.completed`,
            { token, result, error },
            { meta: { ...(meta as object), ownerId, acl: { ownerId }, queueTaskId: taskId } },
          );
        },
        publish: event => this.publish(event),
        logger: this.logger,
      };
      engine = new QueueEngine(client, cluster, codec, options.engine);
      await engine.start();
      (this as unknown as { engine: QueueEngine }).engine = engine;
      if (broker.isMetricsEnabled()) {
        metricsTimer = setInterval(() => {
          for (const { serviceId, ready } of engine.ownedDepths()) this.setDepth(serviceId, ready);
        }, 5000);
        metricsTimer.unref();
      }
    },
    async stopped() {
      clearInterval(metricsTimer);
      await engine?.stop();
      await ownClient?.shutdown();
    },
  } as ServiceSchema;
}
