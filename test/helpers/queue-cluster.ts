/** Brokers running the queue service against the test Cassandra, for integration tests. */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type BrokerOptions, type Middleware, type ServiceSchema } from "moleculer";
import { PlainCodec, type ValueCodec } from "../../lib/codec";
import type { QueueEngineOptions } from "../../lib/queue/options";
import { createQueueService, type QueueServiceOptions } from "../../services/queue.service";

export interface ClusterOptions {
  keyspace: string;
  client: Client;
  engine?: Partial<QueueEngineOptions>;
  /** Extra services (an activity service, the keys service...) created on every broker. */
  services?: ServiceSchema[];
  /** The codec; by default PlainCodec (see `defaultCodec`). */
  codec?: QueueServiceOptions["codec"];
  /**
   * `true`: no codec override, so the queue service uses its own default, the owner-key encryption
   * (SodiumCodec through the keys service); `codec` is then ignored.
   */
  defaultCodec?: boolean;
  /** Broker middlewares (e.g. the ACL middleware). */
  middlewares?: Middleware[];
  namespace?: string;
  /** The transporter of a namespaced broker. @defaultValue "Fake" */
  transporter?: string;
  service?: Partial<QueueServiceOptions>;
  /** Enables Moleculer metrics (no reporter) so tests can read the queue's metrics. */
  metrics?: boolean;
}

/** Starts one broker with the queue service. Brokers of the same namespace see each other (Fake transporter). */
export async function startQueueBroker(nodeID: string, o: ClusterOptions): Promise<ServiceBroker> {
  const broker = new ServiceBroker({
    nodeID,
    namespace: o.namespace,
    transporter: o.namespace ? ((o.transporter ?? "Fake") as BrokerOptions["transporter"]) : undefined,
    logger: process.env.TEST_LOG ? { type: "Console", options: { level: "info" } } : false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
    metrics: o.metrics ? { enabled: true } : false,
    middlewares: o.middlewares,
  });
  for (const s of o.services ?? []) broker.createService(s);
  broker.createService(
    createQueueService({
      client: o.client,
      codec: o.defaultCodec ? undefined : (o.codec ?? ((): ValueCodec => new PlainCodec())),
      engine: { keyspace: o.keyspace, ...o.engine },
      // Most tests name the owner in meta; those that test the ACL bring its middleware.
      trustMeta: o.middlewares === undefined,
      ...o.service,
    }),
  );
  await broker.start();
  return broker;
}

/** Starts `n` brokers one after another (schema migrations must not race) in one namespace. */
export async function startQueueCluster(n: number, o: ClusterOptions): Promise<ServiceBroker[]> {
  const namespace = o.namespace ?? `q-${randomUUID().slice(0, 8)}`;
  const brokers: ServiceBroker[] = [];
  for (let i = 0; i < n; i++) brokers.push(await startQueueBroker(`node-${i + 1}`, { ...o, namespace }));
  await waitFor(() => brokers.every(b => b.registry.nodes.list({}).filter(x => x.available).length === n));
  return brokers;
}

export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise(r => setTimeout(r, 20));
  }
}

export const owner = (id: string) => ({ meta: { ownerId: id } });
