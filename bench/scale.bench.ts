/**
 * Scale benchmark, measured from outside like a user would: standalone `npm start` nodes over NATS
 * (encryption, keys service), a separate client process (this one), 256-byte values.
 *
 * - backlog: two nodes, one queue filled to 100,000 then 2,000,000 tasks; at each size the owner's
 *   resident memory, then the first fetch on the other node after SIGTERM of the owner and after
 *   SIGKILL (the stopped node is started again each time).
 * - queues: one node, 1,000 queues of 2,000 tasks; its resident memory before and after.
 *
 *   npx tsx bench/scale.bench.ts [backlog|queues] [--sizes 100000,2000000] [--queues 1000 --per 2000]
 *
 * Needs NATS (TRANSPORTER, default nats://127.0.0.1:4222) and a Cassandra (CASSANDRA_CONTACT_POINTS,
 * else the local one is started).
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { ensureCassandra } from "../scripts/cassandra-launcher";
import {
  call,
  clientBroker,
  dropKeyspace,
  freshNames,
  ownerOf,
  sleep,
  StandaloneNode,
  value256,
  waitForQueueNodes,
} from "./cluster";

const argv = process.argv.slice(2);
const mode = argv.find(a => !a.startsWith("--")) ?? "backlog";
const arg = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1]! : fallback;
};
const SIZES = arg("sizes", "100000,2000000").split(",").map(Number);
const QUEUES = Number(arg("queues", "1000"));
const PER_QUEUE = Number(arg("per", "2000"));
const IN_FLIGHT = Number(arg("in-flight", "256"));

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
}

/** Adds `n` tasks to the queues (round robin), IN_FLIGHT at a time, with progress lines. */
async function fill(
  broker: ServiceBroker,
  serviceIds: string[],
  n: number,
  progress: (done: number) => void,
): Promise<void> {
  let next = 0;
  let done = 0;
  const t0 = Date.now();
  let lastReport = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      for (let i = next++; i < n; i = next++) {
        await call(broker, "worker.queue.add", { serviceId: serviceIds[i % serviceIds.length], value: value256(i) });
        done++;
        if (done - lastReport >= Math.max(10_000, n / 20)) {
          lastReport = done;
          const secs = (Date.now() - t0) / 1000;
          log(`  ${done.toLocaleString("en")} added (${Math.round(done / secs)}/s)`);
          progress(done);
        }
      }
    }),
  );
}

/** Fetches and acks `n` tasks with 32 workers. */
async function drain(broker: ServiceBroker, serviceId: string, n: number): Promise<void> {
  let done = 0;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      while (done < n) {
        const v = await call(broker, "worker.queue.fetch", { serviceId, workerId: `warm-${w}` });
        if (v === null) {
          await sleep(10);
          continue;
        }
        await call(broker, "worker.queue.ack", { serviceId, workerId: `warm-${w}` });
        done++;
      }
    }),
  );
}

/** Time from `act` to the first task fetched through `via` (the probe acks it), in ms. */
async function firstFetchAfter(
  broker: ServiceBroker,
  via: string,
  serviceId: string,
  act: () => void,
): Promise<number> {
  const t0 = performance.now();
  act();
  for (let i = 0; ; i++) {
    const task = await call<{ taskId: string } | null>(
      broker,
      "worker.queue.fetchTask",
      { serviceId, workerId: `probe-${Date.now()}-${i}`, timeToRecover: 600 },
      via,
    ).catch(() => null);
    if (task) {
      const ms = performance.now() - t0;
      await call(broker, "worker.queue.ack", { serviceId, workerId: `probe-${Date.now()}-${i}` }, via).catch(
        () => undefined,
      );
      return ms;
    }
    await sleep(20);
  }
}

async function backlog(): Promise<void> {
  const { namespace, keyspace } = freshNames("scale");
  const start = (nodeId: string, port: number) => new StandaloneNode({ namespace, keyspace, nodeId, port });
  const nodes = [start("scale-a", 3101), start("scale-b", 3102)];
  await Promise.all(nodes.map(n => n.ready));
  const broker = await clientBroker(namespace);
  try {
    await waitForQueueNodes(broker, 2);
    // Warm-up on another queue (the heap grows to its working size under load), then the baseline.
    const warm = randomUUID();
    await fill(broker, [warm], 20_000, () => undefined);
    await drain(broker, warm, 20_000);
    const serviceId = randomUUID();
    await call(broker, "worker.queue.stats", { serviceId });
    await sleep(5000);
    const baseOwner = (await ownerOf(broker, nodes, serviceId))!;
    log(`empty queue, after a warm-up of 20,000 tasks: owner ${baseOwner.o.nodeId} RSS ${baseOwner.rssMb()} MB`);
    let added = 0;
    for (const size of SIZES) {
      const owner = (await ownerOf(broker, nodes, serviceId))!;
      log(`filling to ${size.toLocaleString("en")} (owner ${owner.o.nodeId}, RSS ${owner.rssMb()} MB)…`);
      await fill(broker, [serviceId], size - added, () => undefined);
      added = size;
      await sleep(5000);
      const rss = owner.rssMb();
      const other = nodes.find(n => n !== owner)!;
      log(`backlog ${size.toLocaleString("en")}: owner ${owner.o.nodeId} RSS ${rss} MB, other ${other.rssMb()} MB`);

      for (const how of ["SIGTERM", "SIGKILL"] as const) {
        const victim = (await ownerOf(broker, nodes, serviceId))!;
        const survivor = nodes.find(n => n !== victim)!;
        const ms = await firstFetchAfter(broker, survivor.o.nodeId, serviceId, () => victim.signal(how));
        added--;
        log(
          `backlog ${size.toLocaleString("en")}: first fetch on ${survivor.o.nodeId} ${Math.round(ms)} ms after ${how} of the owner (RSS of the new owner ${survivor.rssMb()} MB)`,
        );
        await victim.exited;
        const again = start(victim.o.nodeId, victim.o.port);
        nodes[nodes.indexOf(victim)] = again;
        await again.ready;
        await waitForQueueNodes(broker, 2);
        await sleep(3000);
      }
    }
  } finally {
    if (process.env.BENCH_VERBOSE) for (const n of nodes) console.log(`--- ${n.o.nodeId}:\n${n.output(40)}`);
    await broker.stop();
    await Promise.all(nodes.map(n => n.stop()));
    await dropKeyspace(keyspace);
  }
}

async function manyQueues(): Promise<void> {
  const { namespace, keyspace } = freshNames("queues");
  const node = new StandaloneNode({ namespace, keyspace, nodeId: "queues-a", port: 3103 });
  let fresh: StandaloneNode | undefined;
  await node.ready;
  const broker = await clientBroker(namespace);
  try {
    await waitForQueueNodes(broker, 1);
    const serviceIds = Array.from({ length: QUEUES }, () => randomUUID());
    // Every queue exists (owned) before the baseline.
    for (const serviceId of serviceIds) await call(broker, "worker.queue.stats", { serviceId });
    await sleep(5000);
    const before = node.rssMb();
    log(`${QUEUES} empty queues owned: RSS ${before} MB; adding ${PER_QUEUE} tasks to each…`);
    await fill(broker, serviceIds, QUEUES * PER_QUEUE, () => undefined);
    await sleep(5000);
    const after = node.rssMb();
    log(
      `${QUEUES} queues × ${PER_QUEUE} tasks: RSS ${after} MB (+${after - before} MB; the heap of a node under load included)`,
    );
    // The same backlog held by a fresh node: what it costs to own it, load aside.
    await node.stop();
    fresh = new StandaloneNode({ namespace, keyspace, nodeId: "queues-b", port: 3104 });
    await fresh.ready;
    await waitForQueueNodes(broker, 1);
    for (const serviceId of serviceIds) await call(broker, "worker.queue.stats", { serviceId });
    await sleep(5000);
    log(
      `a fresh node that took the ${QUEUES} queues (${(QUEUES * PER_QUEUE).toLocaleString("en")} tasks) over: RSS ${fresh.rssMb()} MB`,
    );
  } finally {
    await broker.stop();
    await node.stop();
    await fresh?.stop();
    await dropKeyspace(keyspace);
  }
}

async function main(): Promise<void> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  process.env.CASSANDRA_CONTACT_POINTS = cassandra.contactPoints.join(",");
  process.env.CASSANDRA_LOCAL_DC = cassandra.localDataCenter;
  try {
    if (mode === "backlog") await backlog();
    else if (mode === "queues") await manyQueues();
    else throw new Error(`unknown mode ${mode}: use backlog or queues`);
  } finally {
    await cassandra.stop();
  }
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
