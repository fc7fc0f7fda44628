/**
 * What the multi-process benchmarks share: standalone queue nodes started the way users run them
 * (`scripts/start.ts`, i.e. `npm start`: keys service, queue, encryption, NATS), one OS process each
 * so that SIGKILL / SIGSTOP reach the broker; their resident memory; and a client broker of our own
 * on the same NATS namespace.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ServiceBroker } from "moleculer";
import { cassandraConfigFromEnv, connectCassandra } from "../lib/cassandra/client";
import { mintAccessToken } from "../lib/http/access-token";

const ROOT = resolve(__dirname, "..");
/** BENCH_NODE_ARGS: extra Node options for the standalone queue nodes (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"). */
const nodeArgs = (): string[] => (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean);

export const NATS = process.env.TRANSPORTER ?? "nats://127.0.0.1:4222";
export const OWNER = "bench-owner";
/** Every node verifies grants with this secret; `clientBroker` puts a grant for OWNER into `meta`. */
export const GRANT_SECRET = randomBytes(32).toString("base64");
export const meta: { ownerId: string; grant?: string } = { ownerId: OWNER };

export interface NodeOptions {
  namespace: string;
  keyspace: string;
  nodeId: string;
  /** The node's gateway port (each node needs its own). */
  port: number;
  env?: NodeJS.ProcessEnv;
}

export class StandaloneNode {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  private readonly lines: string[] = [];
  private stopped = false;

  constructor(readonly o: NodeOptions) {
    this.child = spawn(process.execPath, [...nodeArgs(), "--import", "tsx", join(ROOT, "scripts", "start.ts")], {
      cwd: ROOT,
      env: {
        ...process.env,
        TRANSPORTER: NATS,
        NAMESPACE: o.namespace,
        NODEID: o.nodeId,
        QUEUE_KEYSPACE: o.keyspace,
        LOGLEVEL: "warn",
        PORT: String(o.port),
        ACL_GRANT_SECRET: GRANT_SECRET,
        ...o.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.exited = new Promise(r => this.child.on("exit", () => r()));
    this.ready = new Promise((resolveReady, reject) => {
      const onData = (chunk: Buffer) => {
        for (const line of chunk.toString("utf8").split("\n")) {
          if (!line) continue;
          this.lines.push(line);
          if (this.lines.length > 200) this.lines.shift();
          if (line.startsWith(`Ready: node ${o.nodeId}`)) resolveReady();
        }
      };
      this.child.stdout?.on("data", onData);
      this.child.stderr?.on("data", onData);
      void this.exited.then(() => {
        if (!this.stopped) reject(new Error(`node ${o.nodeId} exited:\n${this.lines.slice(-20).join("\n")}`));
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Resident memory of the node's process, in MB. */
  rssMb(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return Math.round(kb / 1024);
  }

  signal(signal: NodeJS.Signals): void {
    if (signal === "SIGKILL" || signal === "SIGTERM") this.stopped = true;
    this.child.kill(signal);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    await this.exited;
  }

  output(n = 20): string {
    return this.lines.slice(-n).join("\n");
  }
}

export function freshNames(prefix: string): { namespace: string; keyspace: string } {
  const tag = randomBytes(4).toString("hex");
  return { namespace: `${prefix}-${tag}`, keyspace: `bench_${prefix.replace(/\W/g, "_")}_${tag}` };
}

/** A client broker on the same NATS namespace: fast failure detection, calls routed by Moleculer. */
export async function clientBroker(namespace: string, nodeId = `bench-client-${process.pid}`): Promise<ServiceBroker> {
  const broker = new ServiceBroker({
    nodeID: nodeId,
    namespace,
    transporter: { type: "NATS", options: { url: NATS } },
    logger: false,
    heartbeatInterval: 1,
    heartbeatTimeout: 3,
    requestTimeout: 15_000,
  });
  meta.grant ??= await mintAccessToken({
    secret: GRANT_SECRET,
    ownerId: OWNER,
    services: "*",
    expiresInSeconds: 7 * 86_400,
  });
  await broker.start();
  return broker;
}

/** Waits until the client sees `n` nodes running the queue service. */
export async function waitForQueueNodes(broker: ServiceBroker, n: number, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const nodes = new Set(
      (broker.registry.getServiceList({ onlyAvailable: true }) as { name: string; nodeID: string }[])
        .filter(s => s.name === "worker.queue")
        .map(s => s.nodeID),
    );
    if (nodes.size >= n) return;
    if (Date.now() > until) throw new Error(`only ${nodes.size} of ${n} queue nodes seen`);
    await new Promise(r => setTimeout(r, 200));
  }
}

/** Calls an action, retrying retryable failures (and unreachable nodes) like a careful client. */
export async function call<T>(broker: ServiceBroker, action: string, params: object, nodeID?: string): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await broker.call<T, object>(action, params, { meta, nodeID });
    } catch (err) {
      const e = err as { retryable?: boolean; name?: string };
      const unreachable = ["ServiceNotAvailableError", "RequestRejectedError", "RequestTimeoutError"].includes(
        e.name ?? "",
      );
      if ((!e.retryable && !unreachable) || attempt > 2000) throw err;
      await new Promise(r => setTimeout(r, Math.min(200, 5 * (attempt + 1))));
    }
  }
}

/** Which node owns the queue now, per the nodes themselves (health lists the queues each serves). */
export async function ownerOf(
  broker: ServiceBroker,
  nodes: StandaloneNode[],
  serviceId: string,
): Promise<StandaloneNode | undefined> {
  for (const n of nodes) {
    try {
      const h = await broker.call<{ ownedQueues: string[] }, object>(
        "worker.queue.health",
        {},
        { nodeID: n.o.nodeId, timeout: 2000 },
      );
      if (h.ownedQueues.includes(`${OWNER}/${serviceId}`)) return n;
    } catch {
      // a dead or paused node owns nothing we can use
    }
  }
  return undefined;
}

/** 256 bytes of JSON once serialized. */
export function value256(n: number): { n: number; pad: string } {
  const base = JSON.stringify({ n, pad: "" }).length;
  return { n, pad: "x".repeat(256 - base) };
}

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** Drops a benchmark's keyspace (the Cassandra of CASSANDRA_CONTACT_POINTS), so runs do not pile up. */
export async function dropKeyspace(keyspace: string): Promise<void> {
  const client = await connectCassandra(cassandraConfigFromEnv());
  try {
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
  } finally {
    await client.shutdown();
  }
}
