/**
 * Drain benchmark and profile: first single-caller latencies (add, fetch of a new task, ack), then N workers drain a pre-filled queue (fetch then ack in a loop, 256-byte
 * values, encryption included), with the callers on a broker of their own connected to the queue's
 * broker by the Fake transporter (every call serialized, as between nodes), in this one process.
 * Prints per run: tasks/s; Cassandra statements per task by kind and the LWT (Paxos) rounds among
 * them; events per batch of the commit pipeline; CPU per task of this process (queue, callers, Moleculer, crypto)
 * and of the Cassandra JVM (from /proc, when it runs on this machine). Then the same drains against
 * an in-memory queue of the same interface on the same brokers (nothing durable: what Moleculer
 * alone costs here), and the ratio.
 *
 *   npx tsx bench/drain.bench.ts                    # 1, 8 and 32 workers, 3,000 tasks each
 *   BENCH_TASKS=10000 BENCH_WORKERS=32 npx tsx bench/drain.bench.ts
 *   BENCH_DEPTH=1 npx tsx bench/drain.bench.ts      # one batch in flight per queue (default 4)
 *   BENCH_ACL=trust npx tsx bench/drain.bench.ts    # owner from meta instead of a verified grant
 *   BENCH_FENCE_LEASE=0 npx tsx bench/drain.bench.ts # without the fence lease (every commit: write, then read)
 *   BENCH_MAX_BATCH=8 npx tsx bench/drain.bench.ts  # at most 8 events per batch (default 128)
 *   BENCH_LOOP=ack-next npx tsx bench/drain.bench.ts # workers call ackTask with next: true (one call a task)
 *   BENCH_LOOP=queue-worker npx tsx bench/drain.bench.ts # the package's QueueWorker, concurrency = workers
 *                                                    # (fetchTask, then ackTask with next); the in-memory
 *                                                    # queue is drained the same way (BENCH_ACK_NEXT=1: ack-next)
 *   BENCH_SAMPLES=2000 npx tsx bench/drain.bench.ts # single-caller latency over 2,000 tasks first (default 1,000; 0: none)
 *   BENCH_PROFILE=/tmp/drain npx tsx bench/drain.bench.ts  # a V8 CPU profile of each measured drain
 *                                                    # and of the fill before it (<dir>/drain-<workers>.cpuprofile,
 *                                                    # <dir>/fill-<workers>.cpuprofile)
 *   BENCH_PROFILE_KIND=heap BENCH_PROFILE=/tmp/drain ...  # sampled allocations instead (.heapprofile)
 *   BENCH_CLIENT_IDS=1 npx tsx bench/drain.bench.ts  # the fill's adds carry their own taskId
 *   BENCH_TRANSPORTER=nats://127.0.0.1:4222 npx tsx bench/drain.bench.ts  # both brokers over NATS
 *   node --expose-gc --import tsx bench/drain.bench.ts  # also the heap left after each drain (full GC)
 *   BENCH_CLUSTER=3 npx tsx bench/drain.bench.ts    # a local 3-node Cassandra, replication factor 3
 *                                                    # (stop other Cassandra JVMs first: CPU is summed over all)
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import os from "node:os";
import type { Client } from "cassandra-driver";
import { ServiceBroker } from "moleculer";
import { connectCassandra } from "../lib/cassandra/client";
import { MARKER_BASE } from "../lib/queue/store";
import { ensureCassandra, startLocalCluster } from "../scripts/cassandra-launcher";
import { createKeysService } from "../services/keys.service";
import { mintAccessToken } from "../lib/http/access-token";
import { AclMiddleware } from "../middleware/acl.middleware";
import { memoryQueueSchema } from "./fixtures/memory-queue";
import {
  cassandraPids,
  cassandraRequestCounts,
  drainWithQueueWorker,
  countsDiff,
  percentile,
  processCpu,
  threadGroupCpu,
  threadGroupsPerTask,
} from "./harness";
import { createQueueService } from "../services/queue.service";

const TASKS = Number(process.env.BENCH_TASKS ?? 3000);
const WORKERS = (process.env.BENCH_WORKERS ?? "1,8,32").split(",").map(Number);
/** The commit pipeline's depth (batches of the queue in flight); the engine's default when unset. */
const DEPTH = process.env.BENCH_DEPTH ? Number(process.env.BENCH_DEPTH) : undefined;
/** The fence lease in ms; the engine's default when unset. */
const FENCE_LEASE = process.env.BENCH_FENCE_LEASE ? Number(process.env.BENCH_FENCE_LEASE) : undefined;
/** Events per batch at most; the engine's default when unset. */
const MAX_BATCH = process.env.BENCH_MAX_BATCH ? Number(process.env.BENCH_MAX_BATCH) : undefined;
/**
 * How the workers drain, both queues alike: `fetch-ack` (fetch, then ack: two calls a task),
 * `ack-next` (fetchTask once, then ackTask with `next: true`: one call a task) or `queue-worker`
 * (the package's QueueWorker with concurrency = workers: what a user's worker does).
 */
const LOOP = (process.env.BENCH_LOOP ?? (process.env.BENCH_ACK_NEXT === "1" ? "ack-next" : "fetch-ack")) as
  "fetch-ack" | "ack-next" | "queue-worker";
if (!["fetch-ack", "ack-next", "queue-worker"].includes(LOOP))
  throw new Error(`BENCH_LOOP must be fetch-ack, ack-next or queue-worker, not ${LOOP}`);
/** Tasks of the single-caller latency run (add each, then fetch and ack each); 0 skips it. */
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 1000);
/** Where to write a CPU profile of each measured drain (none when unset). */
const PROFILE = process.env.BENCH_PROFILE;
/** The fill's adds name their task (`taskId`, as an idempotent producer does): the queue looks each id up first. */
const CLIENT_IDS = process.env.BENCH_CLIENT_IDS === "1";
/** Nodes of a local Cassandra cluster to start (127.0.0.2...) with replication factor as many; 0: one node. */
const CLUSTER = Number(process.env.BENCH_CLUSTER ?? 0);
/** The transporter between the callers' broker and the queue's (default Fake: in this process). */
const TRANSPORTER = (process.env.BENCH_TRANSPORTER || "Fake") as "Fake";
/** Callers carry a signed grant, as on a real network (the ACL middleware verifies it, cached). */
const grantSecret = randomBytes(32).toString("base64");
let meta: Record<string, unknown> = {};
const value = { pad: "x".repeat(256 - JSON.stringify({ pad: "" }).length) };

/** Counts the statements the queue sends, by kind, and the sizes of its fenced batches. */
class StatementCounter {
  readonly kinds = new Map<string, number>();
  readonly batchSizes: number[] = [];
  /** Event rows (runs or single events) the fenced batches wrote. */
  batchRows = 0;
  lwt = 0;

  constructor(client: Client) {
    const execute = client.execute.bind(client);
    const batch = client.batch.bind(client);
    client.execute = ((query: string, ...rest: unknown[]) => {
      this.count(query);
      return (execute as (...a: unknown[]) => unknown)(query, ...rest);
    }) as Client["execute"];
    client.batch = ((queries: { query: string; params: unknown[] }[], ...rest: unknown[]) => {
      const conditional = queries.some(q => / IF /.test(q.query));
      const table = /(?:INSERT INTO|UPDATE) \S+\.(\w+)/.exec(queries[0]?.query ?? "")?.[1] ?? "?";
      this.kinds.set(
        `batch ${table}${conditional ? " (LWT)" : ""}`,
        (this.kinds.get(`batch ${table}${conditional ? " (LWT)" : ""}`) ?? 0) + 1,
      );
      if (conditional) this.lwt++;
      if (table === "queue_log") {
        // The last statement is the batch's marker: [first, batch_end) are its events, however many rows hold them.
        const marker = queries[queries.length - 1]?.params ?? [];
        this.batchSizes.push(Number(marker[4]) - (Number(marker[3]) - MARKER_BASE));
        this.batchRows += queries.length - 1;
      }
      return (batch as (...a: unknown[]) => unknown)(queries, ...rest);
    }) as Client["batch"];
  }

  /** The key of each query text seen (the regexes cost more than a map lookup, per statement). */
  private readonly keys = new Map<string, { key: string; conditional: boolean }>();

  private count(query: string): void {
    let k = this.keys.get(query);
    if (!k) this.keys.set(query, (k = this.keyOf(query)));
    this.kinds.set(k.key, (this.kinds.get(k.key) ?? 0) + 1);
    if (k.conditional) this.lwt++;
  }

  private keyOf(query: string): { key: string; conditional: boolean } {
    const verb = /^\s*(\w+)/.exec(query)?.[1]?.toUpperCase() ?? "?";
    const table = /(?:FROM|INTO|UPDATE)\s+(?:\w+\.)?(\w+)/i.exec(query)?.[1] ?? "?";
    const conditional = / IF /.test(query);
    // A reverse slice (the run holding a position, or one event) is counted apart from forward slices.
    const reverse = / DESC/.test(query) ? " (last row before)" : "";
    return { key: `${verb} ${table}${reverse}${conditional ? " (LWT)" : ""}`, conditional };
  }

  reset(): void {
    this.kinds.clear();
    this.batchSizes.length = 0;
    this.batchRows = 0;
    this.lwt = 0;
  }
}

/** BENCH_PROFILE_KIND=heap: a sampling profile of every allocation (collected or not) instead of CPU. */
const HEAP_PROFILE = process.env.BENCH_PROFILE_KIND === "heap";

async function startProfile(): Promise<Session> {
  const session = new Session();
  session.connect();
  if (HEAP_PROFILE) {
    await session.post("HeapProfiler.enable");
    await session.post("HeapProfiler.startSampling", {
      samplingInterval: 4096,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    return session;
  }
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return session;
}

async function stopProfile(session: Session, name: string): Promise<void> {
  mkdirSync(PROFILE!, { recursive: true });
  if (HEAP_PROFILE) {
    const { profile } = await session.post("HeapProfiler.stopSampling");
    writeFileSync(`${PROFILE}/${name}.heapprofile`, JSON.stringify(profile));
  } else {
    const { profile } = await session.post("Profiler.stop");
    writeFileSync(`${PROFILE}/${name}.cpuprofile`, JSON.stringify(profile));
  }
  session.disconnect();
}

async function fill(client: ServiceBroker, serviceId: string, n: number, service = "worker.queue"): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < n; i = next++)
        await client.call(
          `${service}.add`,
          CLIENT_IDS ? { serviceId, value, taskId: randomUUID() } : { serviceId, value },
          { meta },
        );
    }),
  );
}

async function drain(
  client: ServiceBroker,
  serviceId: string,
  workers: number,
  service = "worker.queue",
  tasks = TASKS,
): Promise<number> {
  let done = 0;
  if (LOOP === "queue-worker") return drainByQueueWorker(client, serviceId, workers, service, tasks);
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      const workerId = `drain-${w}`;
      if (LOOP === "ack-next") {
        let held = await client.call<{ taskId: string } | null, object>(
          `${service}.fetchTask`,
          { serviceId, workerId },
          { meta },
        );
        while (held) {
          const r = await client.call<{ next: { taskId: string } | null }, object>(
            `${service}.ackTask`,
            { serviceId, workerId, taskId: held.taskId, next: true },
            { meta },
          );
          done++;
          held = r.next;
        }
        return;
      }
      for (;;) {
        const v = await client.call(`${service}.fetch`, { serviceId, workerId }, { meta });
        if (v === null) return;
        await client.call(`${service}.ack`, { serviceId, workerId }, { meta });
        done++;
      }
    }),
  );
  return done;
}

/** The package's QueueWorker drains the queue (concurrency = workers); resolves with the tasks it completed. */
async function drainByQueueWorker(
  client: ServiceBroker,
  serviceId: string,
  workers: number,
  service: string,
  tasks: number,
): Promise<number> {
  const { done, closed } = await drainWithQueueWorker(client, {
    serviceId,
    concurrency: workers,
    tasks,
    meta,
    service,
  });
  // Closed after the caller has taken its measurements (see settle).
  closing = closed;
  return done;
}

/** The QueueWorker of the last drain, closing (awaited by `settle`). */
let closing: Promise<void> | undefined;

/** Waits for what the last drain left closing. */
async function settle(): Promise<void> {
  await closing;
  closing = undefined;
}

/** One caller, one call at a time: add N tasks, then fetch (a new task) and ack each; p50 / p99 per call. */
async function latencies(client: ServiceBroker, n: number, service: string): Promise<string> {
  const serviceId = randomUUID();
  const workerId = "latency";
  const times: Record<"add" | "fetch" | "ack", number[]> = { add: [], fetch: [], ack: [] };
  const timed = async (kind: keyof typeof times, call: () => Promise<unknown>) => {
    const t0 = performance.now();
    const r = await call();
    times[kind].push(performance.now() - t0);
    return r;
  };
  for (let i = 0; i < n; i++) await timed("add", () => client.call(`${service}.add`, { serviceId, value }, { meta }));
  for (let i = 0; i < n; i++) {
    const v = await timed("fetch", () => client.call(`${service}.fetch`, { serviceId, workerId }, { meta }));
    if (v === null) throw new Error(`${service}: fetch found no task (${i} of ${n})`);
    await timed("ack", () => client.call(`${service}.ack`, { serviceId, workerId }, { meta }));
  }
  return Object.entries(times)
    .map(([k, v]) => {
      const s = [...v].sort((x, y) => x - y);
      return `${k} p50 ${percentile(s, 50).toFixed(3)} ms p99 ${percentile(s, 99).toFixed(3)} ms`;
    })
    .join(", ");
}

async function main(): Promise<void> {
  const cassandra = CLUSTER
    ? await startLocalCluster({ nodes: CLUSTER, commitlogSync: "periodic" })
    : await ensureCassandra({ reuseIfRunning: true });
  const pids = cassandraPids();
  const cpid = pids.length === (CLUSTER || 1) ? pids : undefined;
  const replication = `{'class': 'SimpleStrategy', 'replication_factor': ${CLUSTER || 1}}`;
  const dbClient = await connectCassandra({
    contactPoints: cassandra.contactPoints,
    localDataCenter: cassandra.localDataCenter,
  });
  const keyspace = `bench_drain_${randomBytes(4).toString("hex")}`;
  const namespace = `drain-${randomBytes(4).toString("hex")}`;
  const queue = new ServiceBroker({
    nodeID: "drain-queue",
    namespace,
    transporter: TRANSPORTER,
    logger: false,
    middlewares: [
      process.env.BENCH_ACL === "trust"
        ? AclMiddleware({ trustMeta: true })
        : AclMiddleware({ grants: { secret: grantSecret } }),
    ],
  });
  meta =
    process.env.BENCH_ACL === "trust"
      ? { ownerId: "bench-owner" }
      : { grant: await mintAccessToken({ secret: grantSecret, ownerId: "bench-owner", services: "*" }) };
  queue.createService(
    createKeysService({
      client: dbClient,
      keyspace,
      replication,
      masterKey: randomBytes(32).toString("base64"),
    }) as never,
  );
  queue.createService(
    createQueueService({
      client: dbClient,
      engine: {
        keyspace,
        replication,
        ...(DEPTH ? { commitDepth: DEPTH } : {}),
        ...(FENCE_LEASE !== undefined ? { fenceLeaseMs: FENCE_LEASE } : {}),
        ...(MAX_BATCH ? { maxBatchEvents: MAX_BATCH } : {}),
      },
    }),
  );
  queue.createService(memoryQueueSchema());
  const callers = new ServiceBroker({ nodeID: "drain-callers", namespace, transporter: TRANSPORTER, logger: false });
  await queue.start();
  await callers.start();
  await callers.waitForServices(["worker.queue", "memory.queue"]);
  const counter = new StatementCounter(dbClient);
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, load ${os.loadavg()[0]!.toFixed(2)}; node ${process.version}; ` +
      `Cassandra ${cassandra.contactPoints.join(",")}${cpid ? ` (pid ${cpid.join(", ")})` : " (CPU not measured: not the local JVMs)"}; replication factor ${CLUSTER || 1}`,
  );
  try {
    // Warm-up: the JIT of both sides, the keys, the prepared statements.
    const warm = randomUUID();
    await fill(callers, warm, 3000);
    await drain(callers, warm, 32, "worker.queue", 3000);
    await settle();
    if (SAMPLES > 0) {
      await latencies(callers, 300, "worker.queue");
      console.log(`\none caller, ${SAMPLES} tasks, over the ${TRANSPORTER} transporter:`);
      console.log(`  this queue:      ${await latencies(callers, SAMPLES, "worker.queue")}`);
      await latencies(callers, 300, "memory.queue");
      console.log(`  in-memory queue: ${await latencies(callers, SAMPLES, "memory.queue")}`);
    }
    const rates = new Map<number, number>();
    const jvmCpu = () => (cpid ?? []).reduce((sum, pid) => sum + processCpu(pid), 0);
    for (const workers of WORKERS) {
      const serviceId = randomUUID();
      counter.reset();
      const fillSession = PROFILE ? await startProfile() : undefined;
      const fillJvm0 = jvmCpu();
      const fillCpu0 = process.cpuUsage();
      const filling = performance.now();
      await fill(callers, serviceId, TASKS);
      const fillRate = TASKS / ((performance.now() - filling) / 1000);
      const fillCpu = process.cpuUsage(fillCpu0);
      const fillJvm = jvmCpu() - fillJvm0;
      if (fillSession) await stopProfile(fillSession, `fill-${workers}`);
      const fillStatements = [...counter.kinds]
        .sort((a, b) => b[1] - a[1])
        .map(([kind, n]) => `${kind} ${(n / TASKS).toFixed(2)}`)
        .join(", ");
      await new Promise(r => setTimeout(r, 1000));
      const requests0 = await cassandraRequestCounts(dbClient, keyspace);
      counter.reset();
      const cpu0 = process.cpuUsage();
      const c0 = jvmCpu();
      const threads0 = cpid?.length === 1 ? threadGroupCpu(cpid[0]!) : undefined;
      const session = PROFILE ? await startProfile() : undefined;
      const elu0 = performance.eventLoopUtilization();
      const t0 = performance.now();
      const done = await drain(callers, serviceId, workers);
      const elu = performance.eventLoopUtilization(elu0);
      const secs = (performance.now() - t0) / 1000;
      if (session) await stopProfile(session, `drain-${workers}`);
      const cpu = process.cpuUsage(cpu0);
      const cassandraCpu = cpid ? jvmCpu() - c0 : NaN;
      await settle();
      const threads = threads0 && threadGroupsPerTask(threads0, threadGroupCpu(cpid![0]!), done);
      const perTask = (x: number) => (x / done).toFixed(2);
      const sizes = [...counter.batchSizes].sort((a, b) => a - b);
      const mean = sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length);
      console.log(
        `\n${workers} workers (${LOOP}) drain ${done} tasks: ${Math.round(done / secs)} tasks/s (the fill before it, 64 callers adding: ${Math.round(fillRate)} tasks/s)`,
      );
      console.log(
        `  the fill: CPU per task: this process ${((fillCpu.user + fillCpu.system) / 1000 / TASKS).toFixed(3)} ms, ` +
          `Cassandra ${cpid ? ((fillJvm * 1000) / TASKS).toFixed(3) : "n/a"} ms; statements per task: ${fillStatements}`,
      );
      console.log(
        `  CPU per task: this process ${((cpu.user + cpu.system) / 1000 / done).toFixed(3)} ms ` +
          `(system ${(cpu.system / 1000 / done).toFixed(3)}; event loop busy ${(elu.utilization * 100).toFixed(0)} %), ` +
          `Cassandra ${cpid ? ((cassandraCpu * 1000) / done).toFixed(3) : "n/a"} ms`,
      );
      if (threads) console.log(`  Cassandra CPU by thread, ms per task: ${threads}`);
      console.log(
        `  statements per task: ${perTask([...counter.kinds.values()].reduce((a, b) => a + b, 0))}, of them LWT (Paxos rounds) ${perTask(counter.lwt)}`,
      );
      for (const [kind, n] of [...counter.kinds].sort((a, b) => b[1] - a[1]))
        console.log(`    ${kind.padEnd(36)} ${perTask(n)}`);
      console.log(
        `  events per batch of the commit pipeline: mean ${mean.toFixed(1)}, p50 ${sizes[Math.floor(sizes.length / 2)] ?? 0}, max ${sizes[sizes.length - 1] ?? 0} (${sizes.length} batches); event rows per batch ${(counter.batchRows / Math.max(1, sizes.length)).toFixed(1)}`,
      );
      // Cassandra's own count (every client's statements, the queue's derived rows too).
      const requests = countsDiff(requests0, await cassandraRequestCounts(dbClient, keyspace));
      console.log(
        `  Cassandra's local requests per task: ${
          Object.entries(requests)
            .sort((a, b) => b[1] - a[1])
            .map(([k, n]) => `${k} ${perTask(n)}`)
            .join(", ") || "none"
        }`,
      );
      // What the drain left alive (node --expose-gc): an acked task should not stay in memory.
      const gc = (globalThis as { gc?: () => void }).gc;
      if (gc) {
        gc();
        console.log(
          `  heap used after the drain and a full GC: ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1)} MB`,
        );
      }
      rates.set(workers, done / secs);
    }
    // The floor: the same drains, the same brokers and grants, an in-memory queue.
    const warmFloor = randomUUID();
    await fill(callers, warmFloor, 3000, "memory.queue");
    await drain(callers, warmFloor, 32, "memory.queue", 3000);
    await settle();
    console.log("");
    for (const workers of WORKERS) {
      const serviceId = randomUUID();
      await fill(callers, serviceId, TASKS, "memory.queue");
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const done = await drain(callers, serviceId, workers, "memory.queue");
      const rate = done / ((performance.now() - t0) / 1000);
      const cpu = process.cpuUsage(cpu0);
      await settle();
      console.log(
        `in-memory queue, same brokers, ${workers} workers (${LOOP}): ${Math.round(rate)} tasks/s, ` +
          `this process ${((cpu.user + cpu.system) / 1000 / done).toFixed(3)} ms CPU per task; ` +
          `this queue ${((rates.get(workers)! / rate) * 100).toFixed(0)} % of it`,
      );
    }
  } finally {
    await callers.stop();
    await queue.stop();
    await dbClient.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
    await dbClient.shutdown();
    await cassandra.stop();
  }
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  },
);
