/**
 * One run, six queues, the same workload (256-byte values): single-caller latencies of add, fetch
 * of a new task and ack, then the drain of a pre-filled queue by 1, 8 and 32 workers (fetch, then
 * ack, in a loop):
 *
 * - this queue, one standalone `npm start` node (Cassandra, encryption), callers over NATS (pull:
 *   fetch / ack; and the package's QueueWorker, concurrency 32: fetchTask, then ackTask with next);
 * - an in-memory Moleculer queue with the same interface over the same NATS (the transport's floor),
 *   drained the same two ways;
 * - the same in-memory queue answering each change (add, new lease, ack) only after a group commit
 *   of its turn: a 1 ms timer (no CPU), and one single-row Cassandra write (the least a durable
 *   queue on Cassandra can do): the bounds of any queue that commits before it answers;
 * - BullMQ on the machine's Redis (pull: getNextJob / moveToCompleted; and a Worker, concurrency 32);
 * - a RabbitMQ quorum queue, persistent messages with publisher confirms (pull: basic.get / ack; and
 *   a consumer with prefetch 32).
 *
 *   npx tsx bench/compare.bench.ts            # REDIS_URL, AMQP_URL, TRANSPORTER, CASSANDRA_CONTACT_POINTS
 *   BENCH_TASKS=5000 npx tsx bench/compare.bench.ts
 *   BENCH_MARKS=1 ...       # prints each drain's start and end on the monotonic clock (for perf windows)
 *   BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p" ...   # Node options of the queue node
 */
import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join, resolve } from "node:path";
import os from "node:os";
import amqp from "amqplib";
import { Queue, Worker } from "bullmq";
import type { ServiceBroker } from "moleculer";
import { ensureCassandra } from "../scripts/cassandra-launcher";
import { clientBroker, dropKeyspace, freshNames, meta, NATS, StandaloneNode, waitForQueueNodes } from "./cluster";
import {
  cassandraPids,
  cassandraRequestCounts,
  countsDiff,
  drainWithQueueWorker,
  processCpu,
  threadGroupCpu,
  threadGroupsPerTask,
} from "./harness";
import { cassandraConfigFromEnv, connectCassandra } from "../lib/cassandra/client";

const TASKS = Number(process.env.BENCH_TASKS ?? 3000);
const LATENCY_SAMPLES = Number(process.env.BENCH_SAMPLES ?? 1000);
const WORKERS = (process.env.BENCH_WORKERS ?? "1,8,32").split(",").map(Number);
/**
 * BENCH_SUBJECTS=queue,memory,timer,cassandra,bullmq,rabbitmq (all by default) picks the subjects:
 * `timer` and `cassandra` are the in-memory queue answering each change after a group commit (a
 * 1 ms timer; one Cassandra row), the bounds of any queue that commits before it answers.
 */
const SUBJECTS = new Set((process.env.BENCH_SUBJECTS ?? "queue,memory,timer,cassandra,bullmq,rabbitmq").split(","));
const REDIS = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const value = { pad: "x".repeat(256 - JSON.stringify({ pad: "" }).length) };

interface Subject {
  name: string;
  /** Processes whose CPU per task the drains report, by label (the caller is always counted). */
  pids?: Record<string, number>;
  /** Cassandra's request counts for the subject's keyspace, to report statements per task. */
  requests?(): Promise<Record<string, number>>;
  add(queue: string): Promise<void>;
  /** Fetches a new task for the worker and acks it; false when the queue is empty. */
  fetch(queue: string, worker: string): Promise<unknown>;
  ack(queue: string, worker: string, task: unknown): Promise<void>;
  /** Optional push-style drain (a consumer / Worker with the given concurrency): tasks/s. */
  push?(queue: string, n: number, concurrency: number): Promise<number>;
  close(): Promise<void>;
}

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function timed<T>(samples: number[], fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  samples.push(performance.now() - t0);
  return r;
}

async function fill(s: Subject, queue: string, n: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < n; i = next++) await s.add(queue);
    }),
  );
}

/** CPU seconds used so far by this process and by each labelled one. */
function cpuOf(pids: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = { caller: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6 };
  for (const [label, pid] of Object.entries(pids)) {
    try {
      out[label] = processCpu(pid);
    } catch {
      out[label] = NaN;
    }
  }
  return out;
}

/** CPU ms per task of each process between two readings of `cpuOf`. */
function cpuPerTask(before: Record<string, number>, after: Record<string, number>, tasks: number) {
  return Object.fromEntries(
    Object.keys(after).map(k => [k, Math.round(((after[k]! - before[k]!) * 1e6) / Math.max(1, tasks)) / 1000]),
  );
}

/** BENCH_MARKS: a moment on the monotonic clock (ns), to cut a perf recording or a profile to. */
function mark(what: string): void {
  if (process.env.BENCH_MARKS) console.log(`  mark: ${what} at ${process.hrtime.bigint()} ns`);
}

async function drain(s: Subject, queue: string, workers: number): Promise<number> {
  let done = 0;
  const req0 = await s.requests?.();
  const jvm = s.pids?.cassandra;
  const threads0 = jvm ? threadGroupCpu(jvm) : undefined;
  const cpu0 = cpuOf(s.pids ?? {});
  const t0 = performance.now();
  mark(`drain ${workers} starts`);
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      const worker = `w-${w}`;
      for (;;) {
        const task = await s.fetch(queue, worker);
        if (task === null) return;
        await s.ack(queue, worker, task);
        done++;
      }
    }),
  );
  const rate = done / ((performance.now() - t0) / 1000);
  mark(`drain ${workers} ends`);
  const per = cpuPerTask(cpu0, cpuOf(s.pids ?? {}), done);
  console.log(`  drain ${workers}: ${Math.round(rate)} tasks/s; CPU ms per task ${JSON.stringify(per)}`);
  if (jvm && threads0)
    console.log(
      `    Cassandra CPU by thread, ms per task: ${threadGroupsPerTask(threads0, threadGroupCpu(jvm), done, 5)}`,
    );
  if (req0 && s.requests) {
    const d = countsDiff(req0, await s.requests());
    const perReq = Object.entries(d).map(([k, n]) => `${k} ${(n / Math.max(1, done)).toFixed(3)}`);
    console.log(`    Cassandra requests per task (its own counts): ${perReq.join(", ")}`);
  }
  return rate;
}

async function measure(s: Subject): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  // Warm-up, then latencies with one caller.
  const warm = `warm-${randomUUID()}`;
  await fill(s, warm, 2000);
  await drain(s, warm, 32);
  const q = `lat-${randomUUID()}`;
  const add: number[] = [];
  const fetch: number[] = [];
  const ack: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) await timed(add, () => s.add(q));
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    const task = await timed(fetch, () => s.fetch(q, "lat"));
    await timed(ack, () => s.ack(q, "lat", task));
  }
  out["add p50 ms"] = p50(add);
  out["fetch p50 ms"] = p50(fetch);
  out["ack p50 ms"] = p50(ack);
  for (const w of WORKERS) {
    const dq = `drain-${w}-${randomUUID()}`;
    await fill(s, dq, TASKS);
    await new Promise(r => setTimeout(r, 1000)); // as the drain bench: the fill's last writes settle
    out[`drain ${w} workers /s`] = await drain(s, dq, w);
  }
  if (s.push) {
    const pq = `push-${randomUUID()}`;
    await fill(s, pq, TASKS);
    await new Promise(r => setTimeout(r, 1000));
    const cpu0 = cpuOf(s.pids ?? {});
    mark("push starts");
    out["push, concurrency 32 /s"] = await s.push(pq, TASKS, 32);
    mark("push ends");
    const per = cpuPerTask(cpu0, cpuOf(s.pids ?? {}), TASKS);
    console.log(
      `  push 32: ${Math.round(out["push, concurrency 32 /s"])} tasks/s; CPU ms per task ${JSON.stringify(per)}`,
    );
  }
  return out;
}

/** A Moleculer queue with this project's interface (the worker id names the held task on fetch and ack). */
function moleculerPull(
  name: string,
  broker: ServiceBroker,
  service: string,
  pids: Record<string, number>,
  requests?: () => Promise<Record<string, number>>,
): Subject {
  const ids = new Map<string, string>();
  const sid = (q: string) => ids.get(q) ?? (ids.set(q, randomUUID()), ids.get(q)!);
  return {
    name,
    pids,
    ...(requests ? { requests } : {}),
    add: async q => {
      await broker.call(`${service}.add`, { serviceId: sid(q), value }, { meta });
    },
    fetch: (q, worker) => broker.call(`${service}.fetch`, { serviceId: sid(q), workerId: worker }, { meta }),
    ack: async (q, worker) => {
      await broker.call(`${service}.ack`, { serviceId: sid(q), workerId: worker }, { meta });
    },
    // The package's worker, as a user runs it: fetchTask, then ackTask with next (one call a task).
    push: async (q, n, concurrency) => {
      const t0 = performance.now();
      const { closed } = await drainWithQueueWorker(broker, {
        serviceId: sid(q),
        concurrency,
        tasks: n,
        meta,
        service,
      });
      const rate = n / ((performance.now() - t0) / 1000);
      await closed;
      return rate;
    },
    close: async () => undefined,
  };
}

function bullSubject(): Subject {
  const connection = { host: REDIS.hostname, port: Number(REDIS.port || 6379), maxRetriesPerRequest: null };
  const queues = new Map<string, Queue>();
  const workers = new Map<string, Worker>();
  const queueOf = (q: string) => queues.get(q) ?? (queues.set(q, new Queue(q, { connection })), queues.get(q)!);
  const pullWorker = (q: string, w: string) => {
    const key = `${q}/${w}`;
    if (!workers.has(key)) workers.set(key, new Worker(q, null, { connection, autorun: false }));
    return workers.get(key)!;
  };
  return {
    name: "BullMQ 6.7 (Redis)",
    add: async q => {
      await queueOf(q).add("t", value, { removeOnComplete: true });
    },
    fetch: async (q, w) => (await pullWorker(q, w).getNextJob(`${w}-token`)) ?? null,
    ack: async (q, w, job) => {
      await (
        job as { moveToCompleted(v: unknown, token: string, fetchNext: boolean): Promise<unknown> }
      ).moveToCompleted(true, `${w}-token`, false);
    },
    push: async (q, n, concurrency) => {
      let done = 0;
      const t0 = performance.now();
      await new Promise<void>(resolveDone => {
        const worker = new Worker(
          q,
          async () => {
            done++;
            if (done === n) resolveDone();
            return true;
          },
          { connection, concurrency, removeOnComplete: { count: 0 } },
        );
        workers.set(`${q}/push`, worker);
      });
      return n / ((performance.now() - t0) / 1000);
    },
    close: async () => {
      for (const w of workers.values()) await w.close();
      for (const q of queues.values()) {
        await q.obliterate({ force: true }).catch(() => undefined);
        await q.close();
      }
    },
  };
}

async function rabbitSubject(): Promise<Subject> {
  const conn = await amqp.connect(AMQP_URL, { noDelay: true });
  const ch = await conn.createConfirmChannel();
  const declared = new Set<string>();
  const declare = async (q: string) => {
    if (declared.has(q)) return;
    await ch.assertQueue(q, { durable: true, arguments: { "x-queue-type": "quorum" } });
    declared.add(q);
  };
  const body = Buffer.from(JSON.stringify(value));
  return {
    name: "RabbitMQ quorum queue",
    add: async q => {
      await declare(q);
      await new Promise<void>((res, rej) =>
        ch.sendToQueue(q, body, { persistent: true }, err => (err ? rej(err) : res())),
      );
    },
    fetch: async q => {
      await declare(q);
      const m = await ch.get(q, { noAck: false });
      return m === false ? null : m;
    },
    ack: async (_q, _w, m) => ch.ack(m as amqp.Message),
    push: async (q, n, concurrency) => {
      const consumer = await conn.createChannel();
      await consumer.prefetch(concurrency);
      let done = 0;
      const t0 = performance.now();
      await new Promise<void>(resolveDone => {
        void consumer.consume(q, m => {
          if (!m) return;
          consumer.ack(m);
          if (++done === n) resolveDone();
        });
      });
      const rate = n / ((performance.now() - t0) / 1000);
      await consumer.close();
      return rate;
    },
    close: async () => {
      for (const q of declared) await ch.deleteQueue(q).catch(() => undefined);
      await conn.close();
    },
  };
}

async function main(): Promise<void> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  process.env.CASSANDRA_CONTACT_POINTS = cassandra.contactPoints.join(",");
  process.env.CASSANDRA_LOCAL_DC = cassandra.localDataCenter;
  const { namespace, keyspace } = freshNames("compare");
  const floorKeyspace = `${keyspace}_floor`;
  const node = new StandaloneNode({ namespace, keyspace, nodeId: "compare-queue", port: 3141 });
  const memory = spawn(
    process.execPath,
    ["--import", "tsx", join(resolve(__dirname), "fixtures", "memory-queue-node.ts")],
    {
      env: {
        ...process.env,
        NAMESPACE: namespace,
        NODEID: "compare-memory",
        TRANSPORTER: NATS,
        MEMORY_COMMIT_KEYSPACE: floorKeyspace,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  await new Promise<void>(r => memory.stdout.on("data", (d: Buffer) => d.toString().includes("READY") && r()));
  await node.ready;
  const broker = await clientBroker(namespace);
  await waitForQueueNodes(broker, 1);
  await broker.waitForServices(["memory.queue", "memory-timer.queue", "memory-cassandra.queue"]);
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, load ${os.loadavg()[0]!.toFixed(2)}; ${TASKS} tasks per drain`,
  );
  const natsPid = Number(execFileSync("pgrep", ["-o", "nats-server"], { encoding: "utf8" }).trim() || NaN);
  const common: Record<string, number> = Number.isFinite(natsPid) ? { nats: natsPid } : {};
  const subjects: Subject[] = [];
  const counts = await connectCassandra(cassandraConfigFromEnv());
  if (SUBJECTS.has("queue"))
    subjects.push(
      moleculerPull(
        "this queue (standalone node, callers over NATS)",
        broker,
        "worker.queue",
        { ...common, node: node.child.pid!, cassandra: cassandraPids()[0] ?? NaN },
        () => cassandraRequestCounts(counts, keyspace),
      ),
    );
  if (SUBJECTS.has("memory"))
    subjects.push(
      moleculerPull("in-memory Moleculer queue (same NATS)", broker, "memory.queue", { ...common, node: memory.pid! }),
    );
  if (SUBJECTS.has("timer"))
    subjects.push(
      moleculerPull("in-memory, a 1 ms timer per commit (same NATS)", broker, "memory-timer.queue", {
        ...common,
        node: memory.pid!,
      }),
    );
  if (SUBJECTS.has("cassandra"))
    subjects.push(
      moleculerPull("in-memory, a Cassandra row per commit (same NATS)", broker, "memory-cassandra.queue", {
        ...common,
        node: memory.pid!,
        cassandra: cassandraPids()[0] ?? NaN,
      }),
    );
  if (SUBJECTS.has("bullmq")) subjects.push(bullSubject());
  if (SUBJECTS.has("rabbitmq")) subjects.push(await rabbitSubject());
  const results: [string, Record<string, number>][] = [];
  try {
    for (const s of subjects) {
      console.log(`measuring ${s.name}…`);
      const r = await measure(s);
      results.push([s.name, r]);
      console.log(
        `  ${JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v * 100) / 100])))}`,
      );
    }
  } finally {
    for (const s of subjects) await s.close().catch(() => undefined);
    await broker.stop();
    await counts.shutdown();
    await node.stop();
    memory.kill("SIGTERM");
    await dropKeyspace(keyspace);
    await dropKeyspace(floorKeyspace);
    await cassandra.stop();
  }
  const keys = [...new Set(results.flatMap(([, r]) => Object.keys(r)))];
  console.log(`\n${"".padEnd(48)}${keys.map(k => k.padStart(24)).join("")}`);
  for (const [name, r] of results) {
    console.log(
      `${name.padEnd(48)}${keys.map(k => (r[k] === undefined ? "-" : r[k]! < 50 ? r[k]!.toFixed(2) : Math.round(r[k]!).toString()).padStart(24)).join("")}`,
    );
  }
  const byName = (prefix: string) => results.find(([n]) => n.startsWith(prefix))?.[1];
  const mine = byName("this queue");
  const floor = byName("in-memory Moleculer");
  if (mine && floor) {
    for (const w of WORKERS)
      console.log(
        `this queue / in-memory over NATS, ${w}-worker drain: ${((mine[`drain ${w} workers /s`]! / floor[`drain ${w} workers /s`]!) * 100).toFixed(0)} %`,
      );
    const push = "push, concurrency 32 /s";
    console.log(
      `this queue / in-memory over NATS, QueueWorker with concurrency 32: ${((mine[push]! / floor[push]!) * 100).toFixed(0)} %`,
    );
  }
  // What a commit's wait alone leaves of the floor: the bound of any queue that commits each change.
  for (const [label, prefix] of [
    ["a 1 ms timer per commit", "in-memory, a 1 ms"],
    ["a Cassandra row per commit", "in-memory, a Cassandra"],
  ] as const) {
    const bound = byName(prefix);
    if (!bound || !floor) continue;
    const ratios = [...WORKERS.map(w => `drain ${w} workers /s`), "push, concurrency 32 /s"].map(
      k => `${k.replace(" /s", "")} ${((bound[k]! / floor[k]!) * 100).toFixed(0)} %`,
    );
    console.log(`in-memory with ${label} / in-memory over NATS: ${ratios.join(", ")}`);
  }
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  },
);
