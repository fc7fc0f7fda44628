/**
 * The `worker.queue` service: validates parameters, establishes the owner of the call, and
 * delegates to the QueueEngine (lib/queue/engine.ts). The interface is the original's:
 * add -> true; fetch -> the held task's value or null; ack -> true / false.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import type { ValueCodec } from "../lib/codec";
import { cassandraConfigFromEnv, connectCassandra } from "../lib/cassandra/client";
import { MoleculerKeyProvider } from "../lib/crypto/key-provider";
import { SodiumCodec } from "../lib/crypto/sodium-codec";
import { OwnerMissingError, ValueTooLargeError } from "../lib/errors";
import { QueueEngine, queueKey, type Cluster, type ShardRequest } from "../lib/queue/engine";
import type { QueueEngineOptions } from "../lib/queue/options";

export interface QueueServiceOptions {
  /** @defaultValue "worker.queue" */
  name?: string;
  /** Engine options (keyspace, retention, bucket sizes, owner lease...). */
  engine?: Partial<QueueEngineOptions>;
  /** A Cassandra client to use; by default one is connected from the CASSANDRA_* environment. */
  client?: Client;
  /** How values are sealed; by default the owner-key encryption through the keys service. */
  codec?: (broker: ServiceBroker) => ValueCodec;
  /** The keys service giving owner keys (`getOek`). @defaultValue "keys" */
  keysService?: string;
  /** Service whose `completed` action receives workflow results. @defaultValue "flow.activity" */
  activityService?: string;
  /** Largest accepted value / result, in bytes of JSON. @defaultValue 1 MiB */
  maxValueBytes?: number;
  /** Longest accepted timeToRecover, in seconds. @defaultValue 86400 */
  maxTimeToRecover?: number;
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
}

/** The owner of a call: set by the ACL middleware, or by the caller in one of the two usual places. */
export function ownerOf(ctx: QueueContext<unknown>): string {
  const owner = ctx.meta?.acl?.ownerId ?? ctx.meta?.ownerId;
  if (typeof owner !== "string" || owner === "") throw new OwnerMissingError(ctx.action?.name ?? "unknown");
  return owner;
}

function checkSize(field: string, value: unknown, limit: number): void {
  if (value === undefined) return;
  const size = Buffer.byteLength(JSON.stringify(value) ?? "", "utf8");
  if (size > limit) throw new ValueTooLargeError(field, size, limit);
}

export function createQueueService(options: QueueServiceOptions = {}): ServiceSchema {
  const name = options.name ?? "worker.queue";
  const maxValueBytes = options.maxValueBytes ?? 1024 * 1024;
  const maxTtr = options.maxTimeToRecover ?? 86_400;
  const activity = options.activityService ?? "flow.activity";
  let engine: QueueEngine;
  let ownClient: Client | undefined;

  const serviceId = { type: "uuid" } as const;
  const workerId = { type: "string", min: 1, max: 256 } as const;
  /** `taskId` (optional) makes the ack apply only to that task, so a late ack cannot complete a newer one. */
  const ackParams = {
    serviceId,
    workerId,
    taskId: { type: "string", optional: true, min: 1, max: 256 },
    result: { type: "any", optional: true },
    error: { type: "any", optional: true },
  } as const;

  return {
    name,
    settings: { activityService: activity, maxValueBytes },
    actions: {
      add: {
        params: {
          serviceId,
          value: { type: "any" },
          token: { type: "object", optional: true },
          taskId: { type: "string", optional: true, min: 1, max: 256 },
        },
        async handler(ctx: QueueContext<{ serviceId: string; value: unknown; token?: object; taskId?: string }>) {
          const owner = ownerOf(ctx);
          checkSize("value", ctx.params.value, maxValueBytes);
          checkSize("token", ctx.params.token, maxValueBytes);
          await engine.add(ctx, queueKey(owner, ctx.params.serviceId), {
            taskId: ctx.params.taskId ?? randomUUID(),
            clientId: ctx.params.taskId !== undefined,
            value: ctx.params.value,
            token: ctx.params.token,
          });
          return true;
        },
      },
      fetch: {
        params: {
          serviceId,
          workerId,
          timeToRecover: { type: "number", positive: true, max: maxTtr, optional: true, convert: true },
        },
        async handler(ctx: QueueContext<{ serviceId: string; workerId: string; timeToRecover?: number }>) {
          const task = await engine.fetch(
            ctx,
            queueKey(ownerOf(ctx), ctx.params.serviceId),
            ctx.params.workerId,
            (ctx.params.timeToRecover ?? 60) * 1000,
          );
          return task ? task.value : null;
        },
      },
      /** Like fetch, with what a worker needs to know: `{ taskId, attempt, leaseUntil, value }` or null. */
      fetchTask: {
        params: {
          serviceId,
          workerId,
          timeToRecover: { type: "number", positive: true, max: maxTtr, optional: true, convert: true },
        },
        async handler(ctx: QueueContext<{ serviceId: string; workerId: string; timeToRecover?: number }>) {
          return engine.fetch(
            ctx,
            queueKey(ownerOf(ctx), ctx.params.serviceId),
            ctx.params.workerId,
            (ctx.params.timeToRecover ?? 60) * 1000,
          );
        },
      },
      ack: {
        params: ackParams,
        async handler(ctx: QueueContext<AckParams>) {
          const outcome = await this.ackOutcome(ctx);
          return outcome.ok;
        },
      },
      /** Like ack, saying why it failed: `{ ok: true, taskId }` or `{ ok: false, reason: "NO_TASK" | "LEASE_LOST" }`. */
      ackTask: {
        params: ackParams,
        async handler(ctx: QueueContext<AckParams>) {
          return this.ackOutcome(ctx);
        },
      },
      /** Internal: a request forwarded by another node to this queue's owner. */
      shardExec: {
        visibility: "public",
        acl: false,
        params: { request: { type: "object" } },
        async handler(ctx: QueueContext<{ request: ShardRequest }>) {
          return engine.executeForwarded(ctx.params.request, ctx);
        },
      },
    },
    methods: {
      async ackOutcome(ctx: QueueContext<AckParams>) {
        const owner = ownerOf(ctx);
        checkSize("result", ctx.params.result, maxValueBytes);
        checkSize("error", ctx.params.error, maxValueBytes);
        const outcome = await engine.ack(
          ctx,
          queueKey(owner, ctx.params.serviceId),
          ctx.params.workerId,
          ctx.params.taskId,
          {
            result: ctx.params.result,
            error: ctx.params.error,
            meta: ctx.meta,
          },
        );
        if (!outcome.ok) {
          this.logger.debug(`ack by ${ctx.params.workerId} refused: ${outcome.reason}`);
        }
        return outcome;
      },
    },
    async started() {
      const broker = this.broker as ServiceBroker;
      const client = options.client ?? (ownClient = await connectCassandra(cassandraConfigFromEnv()));
      const codec = options.codec
        ? options.codec(broker)
        : new SodiumCodec(new MoleculerKeyProvider({ broker, service: name, keysService: options.keysService }));
      const logger = this.logger;
      const cluster: Cluster = {
        nodeId: broker.nodeID,
        isNodeAvailable: id => id === broker.nodeID || broker.registry.nodes.get(id)?.available === true,
        forward: (nodeID, request, caller) => {
          const ctx = caller as QueueContext<unknown>;
          return ctx.call(`${name}.shardExec`, { request }, { nodeID, meta: ctx.meta });
        },
        completeWorkflow: async ({ token, result, error, meta, taskId }) => {
          await broker.call(
            `${activity}.completed`,
            { token, result, error },
            { meta: { ...(meta as object), queueTaskId: taskId } },
          );
        },
        logger,
      };
      engine = new QueueEngine(client, cluster, codec, options.engine);
      await engine.start();
      (this as unknown as { engine: QueueEngine }).engine = engine;
    },
    async stopped() {
      await engine?.stop();
      await ownClient?.shutdown();
    },
  } as ServiceSchema;
}
