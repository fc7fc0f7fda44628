/**
 * What the benchmarks share: a broker with the keys service (encryption included), the queue and,
 * when asked, the HTTP gateway, against a real Cassandra (started unless CASSANDRA_CONTACT_POINTS is
 * set); the sample value; percentiles; and one worker's fetch + ack over HTTP or broker.call.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import type { Client } from "cassandra-driver";
import { ServiceBroker } from "moleculer";
import { connectCassandra } from "../lib/cassandra/client";
import { ensureCassandra } from "../scripts/cassandra-launcher";
import { mintAccessToken } from "../lib/http/access-token";
import { createApiService } from "../services/api.service";
import { createKeysService } from "../services/keys.service";
import { createQueueService } from "../services/queue.service";
import { QueueWorker } from "../lib/worker/queue-worker";

export const OWNER = "bench-owner";
export const meta = { ownerId: OWNER };
/** A 532-byte JSON value once serialized. */
export const value = { payload: randomBytes(384).toString("base64"), n: 0 };

/** One worker's fetch + ack; false when the queue was empty. */
export type RoundTrip = (serviceId: string, workerId: string) => Promise<boolean>;

export interface BenchNode {
  broker: ServiceBroker;
  /** Set when started with the gateway. */
  api?: { baseUrl: string; token: string };
  stop(): Promise<void>;
}

export async function startBenchNode(name: string, withApi = false): Promise<BenchNode> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  const client = await connectCassandra({
    contactPoints: cassandra.contactPoints,
    localDataCenter: cassandra.localDataCenter,
  });
  const keyspace = `bench_${name.replace(/\W/g, "_")}_${randomBytes(4).toString("hex")}`;
  const secret = randomBytes(32).toString("base64");
  const broker = new ServiceBroker({ nodeID: `bench-${name}`, logger: false });
  broker.createService(
    createKeysService({
      client,
      keyspace,
      replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
      masterKey: randomBytes(32).toString("base64"),
      trustMeta: true,
    }) as never,
  );
  // BENCH_FENCE_LEASE=0 measures without the fence lease (the engine's default otherwise).
  const lease = process.env.BENCH_FENCE_LEASE;
  broker.createService(
    createQueueService({
      client,
      engine: { keyspace, ...(lease !== undefined && lease !== "" ? { fenceLeaseMs: Number(lease) } : {}) },
      trustMeta: true,
    }),
  );
  if (withApi) broker.createService(createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } }));
  const stop = async () => {
    await broker.stop();
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
    await client.shutdown();
    await cassandra.stop();
  };
  try {
    await broker.start();
  } catch (err) {
    await stop();
    throw err;
  }
  let api: BenchNode["api"];
  if (withApi) {
    const port = (broker.getLocalService("api")?.settings as { port: number }).port;
    api = {
      baseUrl: `http://127.0.0.1:${port}`,
      token: await mintAccessToken({ secret, ownerId: OWNER, services: "*" }),
    };
  }
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
      `load ${os.loadavg()[0]!.toFixed(2)}; node ${process.version}; Cassandra at ${cassandra.contactPoints.join(",")}`,
  );
  return { broker, api, stop };
}

/** CPU seconds used so far by the process with this pid (user + system). */
export function processCpu(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100;
}

/** The Cassandra JVMs on this machine (all of them: with a local cluster, run nothing else). */
export function cassandraPids(): number[] {
  try {
    const out = execFileSync("pgrep", ["-f", "org.apache.cassandra.service.CassandraDaemon"], { encoding: "utf8" });
    return out.trim().split("\n").map(Number);
  } catch {
    return [];
  }
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

export function brokerRoundTrip(broker: ServiceBroker): RoundTrip {
  return async (serviceId, workerId) => {
    const task = await broker.call<{ taskId: string } | null, object>(
      "worker.queue.fetchTask",
      { serviceId, workerId },
      { meta },
    );
    if (task === null) return false;
    const outcome = await broker.call<{ ok: boolean }, object>(
      "worker.queue.ackTask",
      { serviceId, workerId, taskId: task.taskId, result: true },
      { meta },
    );
    if (!outcome.ok) throw new Error(`ack refused: ${JSON.stringify(outcome)}`);
    return true;
  };
}

export function httpRoundTrip(apiUrl: string, token: string): RoundTrip {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  return async (serviceId, workerId) => {
    const fetched = await fetch(`${apiUrl}/queue/${serviceId}/fetch`, {
      method: "POST",
      headers,
      body: JSON.stringify({ workerId }),
    });
    if (fetched.status === 204) return false;
    if (fetched.status !== 200) throw new Error(`fetch answered ${fetched.status}: ${await fetched.text()}`);
    await fetched.json();
    const taskId = decodeURIComponent(fetched.headers.get("x-task-id") ?? "");
    const acked = await fetch(`${apiUrl}/queue/${serviceId}/ack`, {
      method: "POST",
      headers,
      body: JSON.stringify({ workerId, taskId, result: true }),
    });
    if (acked.status !== 200) throw new Error(`ack answered ${acked.status}: ${await acked.text()}`);
    await acked.arrayBuffer();
    return true;
  };
}

/**
 * Cassandra's own count of local reads and writes (mutations: a single-partition batch is one) per
 * table of a keyspace, from its virtual tables; diff two readings to get the statements of a run
 * that happened in another process.
 */
export async function cassandraRequestCounts(
  client: { execute(q: string, p?: unknown[]): Promise<{ rows: Record<string, unknown>[] }> },
  keyspace: string,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [view, verb] of [
    ["local_write_latency", "write"],
    ["local_read_latency", "read"],
    ["local_scan_latency", "scan"],
  ] as const) {
    const rs = await client.execute(`SELECT table_name, count FROM system_views.${view} WHERE keyspace_name = ?`, [
      keyspace,
    ]);
    for (const row of rs.rows) {
      const n = Number(String(row["count"]));
      if (n > 0) out[`${verb} ${String(row["table_name"])}`] = n;
    }
  }
  return out;
}

/** `after - before`, per key, dropping zeros. */
export function countsDiff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

/**
 * Cassandra's shared pool (SEPWorker) renames a thread after the stage it works for at the moment,
 * so its CPU cannot be split by stage from /proc: those names count as one group.
 */
const SHARED_POOL = /^(Native-Transpor|MutationStage|ReadStage|CounterMutation|ViewMutationSt|RequestRespons)/;

/** CPU seconds per thread group of a process (thread names without their trailing number). */
export function threadGroupCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8")
        .trim()
        .replace(/[-:#]?\d+$/, "");
      const name = SHARED_POOL.test(comm) ? "shared pool (requests, mutations, reads)" : comm;
      const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** The largest thread groups' CPU between two readings, in ms per task: "MutationStage 0.031, …". */
export function threadGroupsPerTask(
  before: Map<string, number>,
  after: Map<string, number>,
  tasks: number,
  top = 6,
): string {
  return [...after]
    .map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const)
    .filter(([, v]) => v > 0)
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => `${k} ${((v * 1000) / tasks).toFixed(3)}`)
    .join(", ");
}

/**
 * The driver alone against the local Cassandra JVM (started unless one runs): a client, a fresh
 * keyspace with replication factor 1, and the JVM's pid (to read its CPU); `close` drops the
 * keyspace and stops what it started.
 */
export async function driverBench(
  prefix: string,
): Promise<{ client: Client; ks: string; pid: number; close(): Promise<void> }> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  const pids = cassandraPids();
  if (pids.length !== 1) throw new Error(`expected one local Cassandra JVM, found ${pids.length}`);
  const client = await connectCassandra({
    contactPoints: cassandra.contactPoints,
    localDataCenter: cassandra.localDataCenter,
  });
  const ks = `${prefix}_${randomBytes(4).toString("hex")}`;
  await client.execute(`CREATE KEYSPACE ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
  return {
    client,
    ks,
    pid: pids[0]!,
    async close() {
      await client.execute(`DROP KEYSPACE IF EXISTS ${ks}`);
      await client.shutdown();
      await cassandra.stop();
    },
  };
}

/**
 * The package's QueueWorker (a trivial handler, `concurrency` slots) drains `tasks` tasks of a
 * queue, as a user's worker does: fetchTask, then ackTask with next. Resolves once the last one is
 * acked; `closed` settles when the worker has closed (close() waits out the slots' long polls,
 * which is not part of the drain). Rejects with the first failed task's error.
 */
export async function drainWithQueueWorker(
  broker: ServiceBroker,
  o: { serviceId: string; concurrency: number; tasks: number; meta: Record<string, unknown>; service: string },
): Promise<{ done: number; closed: Promise<void> }> {
  let done = 0;
  const worker = new QueueWorker(
    broker,
    {
      serviceId: o.serviceId,
      concurrency: o.concurrency,
      meta: o.meta,
      queueService: o.service,
      wait: 1,
      timeToRecover: 30,
    },
    () => true,
  );
  const finished = new Promise<void>((resolve, reject) => {
    worker.on("completed", () => {
      if (++done === o.tasks) resolve();
    });
    worker.on("failed", (_task, err) => reject(err));
  });
  await finished.catch(async (err: unknown) => {
    await worker.close();
    throw err;
  });
  return { done, closed: worker.close() };
}
