/** One broker with the queue service in its own keyspace, for the feature tests. */
import type { Client } from "cassandra-driver";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import type { QueueEngineOptions } from "../../lib/queue/options";
import { dropKeyspace, testClient, uniqueKeyspace } from "./cassandra";
import { startQueueBroker, startQueueCluster } from "./queue-cluster";

export interface Fixture {
  client: Client;
  keyspace: string;
  brokers: ServiceBroker[];
  broker: ServiceBroker;
  /** Calls a queue action as owner `ownerId` (default "owner-1"). */
  call<T = any>(action: string, params: object, ownerId?: string): Promise<T>;
}

/** Registers beforeAll/afterAll hooks that start `nodes` brokers against a fresh keyspace. */
export function queueFixture(
  name: string,
  o: { nodes?: number; engine?: Partial<QueueEngineOptions>; services?: ServiceSchema[]; metrics?: boolean } = {},
): Fixture {
  const f = { keyspace: uniqueKeyspace(name), brokers: [] as ServiceBroker[] } as unknown as Fixture;
  beforeAll(async () => {
    f.client = await testClient();
    const base = { keyspace: f.keyspace, client: f.client, engine: o.engine, services: o.services, metrics: o.metrics };
    f.brokers = (o.nodes ?? 1) > 1 ? await startQueueCluster(o.nodes!, base) : [await startQueueBroker(name, base)];
    f.broker = f.brokers[0]!;
    f.call = (action, params, ownerId = "owner-1") =>
      f.broker.call(`worker.queue.${action}`, params, { meta: { ownerId } });
  });
  afterAll(async () => {
    await Promise.all(f.brokers.filter(b => b.started).map(b => b.stop()));
    await dropKeyspace(f.client, f.keyspace);
    await f.client?.shutdown();
  });
  return f;
}

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/**
 * Fetches for `workerId` until the queue hands it a task (a delayed one coming due): the value.
 * Never on a clock: the test's timeout is the only limit.
 */
export async function fetchWhenDue(f: Fixture, serviceId: string, workerId: string): Promise<unknown> {
  for (;;) {
    const got = await f.call("fetch", { serviceId, workerId });
    if (got !== null) return got;
    await sleep(50);
  }
}
