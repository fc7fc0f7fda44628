/**
 * G1 across a Cassandra restart. This file starts its OWN Cassandra (scripts/cassandra-launcher.ts, a
 * local JVM: the test Cassandra of the run is left alone) on its own ports and data folder, with
 * `commitlog_sync: batch` so that every acknowledged write is on disk. A broker with the queue
 * service runs against it; 200 tasks are added, 50 fetched and acked, one more is leased and left
 * unacked; Cassandra is stopped while the broker keeps running (calls must fail with a retryable
 * error), restarted on the same data folder, and then the remaining 150 tasks (the leased one
 * included, once its lease has run out) must all be delivered, and none of the 50 acked ones.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import type { Client } from "cassandra-driver";
import { ServiceBroker } from "moleculer";
import { connectCassandra } from "../lib/cassandra/client";
import {
  defaultCacheDir,
  ensureCassandra,
  type CassandraHandle,
  type LauncherOptions,
} from "../scripts/cassandra-launcher";
import { PlainCodec } from "../lib/codec";
import { createQueueService } from "../services/queue.service";

const OWNER = { meta: { ownerId: "owner-restart" } };
const serviceId = "6f1d3a52-1b7e-4d0a-9b1e-3c2f6a7d8e90";
const keyspace = `queue_restart_${randomBytes(4).toString("hex")}`;
const TASKS = 200;
const ACKED_BEFORE = 50;
const HELD_TTR_S = 3;

jest.setTimeout(420_000);

let handle: CassandraHandle | undefined;
let client: Client | undefined;
let broker: ServiceBroker | undefined;
let dataDir: string;
let launcher: LauncherOptions;

let watchdog: ChildProcess | undefined;

/**
 * The launcher runs the JVM in its own process group, and stops it when this process exits
 * normally; if jest is killed hard, a detached watchdog kills the JVM and removes its data folder.
 */
function guard(h: CassandraHandle): void {
  unguard();
  if (!h.pid) return;
  watchdog = spawn(
    "sh",
    [
      "-c",
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 ${h.pid} 2>/dev/null; sleep 1; rm -rf '${dataDir}'`,
    ],
    { detached: true, stdio: "ignore" },
  );
  watchdog.unref();
}

function unguard(): void {
  if (watchdog && watchdog.exitCode === null) watchdog.kill("SIGKILL");
  watchdog = undefined;
}

/** Every driver Host object the client has had (see afterAll). */
const seenHosts = new Set<object>();
function rememberHosts(): void {
  for (const host of client?.hosts.values() ?? []) seenHosts.add(host);
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

function portFree(port: number): Promise<boolean> {
  return new Promise(resolvePromise => {
    const server = createServer();
    server.once("error", () => resolvePromise(false));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => server.close(() => resolvePromise(true)));
  });
}

/** 9242 / 7200 when free, else two other ports that are (the same ones are used again on restart). */
async function choosePorts(): Promise<{ nativePort: number; storagePort: number }> {
  for (const [nativePort, storagePort] of [
    [9242, 7200],
    [9243, 7201],
    [9244, 7202],
  ] as const) {
    if ((await portFree(nativePort)) && (await portFree(storagePort))) return { nativePort, storagePort };
  }
  throw new Error("no free pair of ports among 9242-9244 / 7200-7202 for the restart test's Cassandra");
}

interface Fetched {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: { n: number };
}

interface CallError {
  name?: string;
  type?: string;
  code?: number;
  retryable?: boolean;
  message?: string;
}

const describeError = (e: CallError) =>
  `${e.name}${e.type ? `/${e.type}` : ""} retryable=${e.retryable} code=${e.code}: ${e.message}`;

beforeAll(async () => {
  const ports = await choosePorts();
  dataDir = join(defaultCacheDir(), "restart-test", `${Date.now()}-${process.pid}`);
  mkdirSync(dataDir, { recursive: true });
  // The run's CASSANDRA_CONTACT_POINTS (and any port / data settings) are not for this Cassandra.
  const env = { ...process.env };
  for (const name of [
    "CASSANDRA_CONTACT_POINTS",
    "CASSANDRA_NATIVE_PORT",
    "CASSANDRA_STORAGE_PORT",
    "CASSANDRA_DATA_DIR",
    "CASSANDRA_COMMITLOG_SYNC",
  ]) {
    delete env[name];
  }
  launcher = {
    mode: "jvm",
    env,
    ...ports,
    dataDir,
    commitlogSync: "batch",
    heap: "768M",
    startTimeoutMs: 180_000,
    log: line => process.stderr.write(`[restart-test cassandra] ${line}\n`),
  };
  handle = await ensureCassandra(launcher);
  guard(handle);
  client = await connectCassandra({ contactPoints: handle.contactPoints, localDataCenter: handle.localDataCenter });
  rememberHosts();
  broker = new ServiceBroker({ nodeID: "restart-node", logger: false, metrics: false, tracing: false });
  broker.createService(
    createQueueService({
      client,
      codec: () => new PlainCodec(),
      engine: { keyspace, ownerLeaseMs: 3000 },
      trustMeta: true,
    }),
  );
  await broker.start();
});

afterAll(async () => {
  await broker?.stop().catch(() => undefined);
  rememberHosts();
  await client?.shutdown().catch(() => undefined);
  // cassandra-driver 4.10 replaces its Host object when Cassandra comes back, without shutting the
  // old one down: its 200 ms health timer (and pool reconnection timer) would keep jest alive for ever.
  for (const host of seenHosts) {
    await (host as unknown as { shutdown(wait: boolean): Promise<void> }).shutdown(false).catch(() => undefined);
  }
  await handle?.stop();
  unguard();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("no acknowledged task is lost or comes back across a Cassandra restart", async () => {
  const b = broker!;
  const taskIds = Array.from({ length: TASKS }, (_, n) => `r-${n}`);
  for (let i = 0; i < TASKS; i += 8) {
    await Promise.all(
      taskIds
        .slice(i, i + 8)
        .map(taskId =>
          expect(
            b.call("worker.queue.add", { serviceId, value: { n: Number(taskId.slice(2)) }, taskId }, OWNER),
          ).resolves.toBe(true),
        ),
    );
  }

  const acked = new Set<string>();
  for (let i = 0; i < ACKED_BEFORE; i++) {
    const t = await b.call<Fetched | null, object>(
      "worker.queue.fetchTask",
      { serviceId, workerId: "w1", timeToRecover: 60 },
      OWNER,
    );
    expect(t).not.toBeNull();
    const res = await b.call<{ ok: boolean }, object>(
      "worker.queue.ackTask",
      { serviceId, workerId: "w1", taskId: t!.taskId },
      OWNER,
    );
    expect(res.ok).toBe(true);
    acked.add(t!.taskId);
  }
  expect(acked.size).toBe(ACKED_BEFORE);
  // One more leased and never acked: after the restart it must come back once its lease has run out.
  const held = await b.call<Fetched | null, object>(
    "worker.queue.fetchTask",
    { serviceId, workerId: "w-held", timeToRecover: HELD_TTR_S },
    OWNER,
  );
  expect(held).not.toBeNull();
  expect(acked.has(held!.taskId)).toBe(false);

  // Cassandra goes away (SIGTERM) while the broker keeps running.
  const stoppedAt = Date.now();
  await handle!.stop();
  handle = undefined;
  unguard();
  process.stderr.write(`[restart-test] Cassandra stopped in ${Date.now() - stoppedAt} ms\n`);

  /** Errors of calls made while Cassandra was down; checked after the G1 checks. */
  const downErrors: string[] = [];
  const notRetryable: string[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now();
    let err: CallError | undefined;
    try {
      await b.call("worker.queue.add", { serviceId, value: { n: -1 }, taskId: `down-${i}` }, OWNER);
    } catch (e) {
      err = e as CallError;
    }
    downErrors.push(
      err ? `add (${Date.now() - t0} ms): ${describeError(err)}` : "add succeeded while Cassandra was down",
    );
    if (!err || err.retryable !== true) notRetryable.push(downErrors[downErrors.length - 1]!);
  }
  {
    const t0 = Date.now();
    try {
      const t = await b.call("worker.queue.fetchTask", { serviceId, workerId: "w2", timeToRecover: 30 }, OWNER);
      downErrors.push(`fetch (${Date.now() - t0} ms) answered ${JSON.stringify(t)} while Cassandra was down`);
    } catch (e) {
      downErrors.push(`fetch (${Date.now() - t0} ms): ${describeError(e as CallError)}`);
      if ((e as CallError).retryable !== true) notRetryable.push(downErrors[downErrors.length - 1]!);
    }
  }
  process.stderr.write(`[restart-test] while down:\n  ${downErrors.join("\n  ")}\n`);

  // Same data folder, same ports.
  const restartAt = Date.now();
  handle = await ensureCassandra(launcher);
  guard(handle);
  const cassandraBack = Date.now();
  process.stderr.write(`[restart-test] Cassandra back after ${cassandraBack - restartAt} ms\n`);

  // The broker (its driver reconnecting on its own) serves again: drain the queue.
  const delivered = new Map<string, Fetched>();
  const cameBack: string[] = [];
  const recoveryErrors = new Map<string, number>();
  let firstAnswerAt = 0;
  const deadline = Date.now() + 150_000;
  for (;;) {
    if (Date.now() > deadline) break;
    rememberHosts();
    let t: Fetched | null;
    try {
      t = await b.call<Fetched | null, object>(
        "worker.queue.fetchTask",
        { serviceId, workerId: "w2", timeToRecover: 30 },
        OWNER,
      );
    } catch (e) {
      // Retried like a client would; non-retryable ones are reported below.
      const key = describeError(e as CallError).slice(0, 200);
      recoveryErrors.set(key, (recoveryErrors.get(key) ?? 0) + 1);
      if ((e as CallError).retryable !== true && (recoveryErrors.get(key) ?? 0) === 1)
        notRetryable.push(`after restart: ${key}`);
      await sleep(200);
      continue;
    }
    firstAnswerAt ||= Date.now();
    if (!t) {
      if (delivered.size >= TASKS - ACKED_BEFORE) break;
      await sleep(200); // the held task comes back when its lease has run out
      continue;
    }
    if (acked.has(t.taskId)) cameBack.push(t.taskId);
    delivered.set(t.taskId, t);
    let res: { ok: boolean } | undefined;
    while (!res && Date.now() < deadline) {
      try {
        res = await b.call<{ ok: boolean }, object>(
          "worker.queue.ackTask",
          { serviceId, workerId: "w2", taskId: t.taskId },
          OWNER,
        );
      } catch (e) {
        const key = describeError(e as CallError).slice(0, 200);
        recoveryErrors.set(key, (recoveryErrors.get(key) ?? 0) + 1);
        await sleep(200);
      }
    }
    expect(res?.ok).toBe(true);
  }
  process.stderr.write(
    `[restart-test] first answer ${firstAnswerAt ? firstAnswerAt - cassandraBack : "never"} ms after Cassandra was back; ` +
      `drained at +${Date.now() - cassandraBack} ms; errors meanwhile: ${JSON.stringify(Object.fromEntries(recoveryErrors), null, 1)}\n`,
  );

  const remaining = taskIds.filter(id => !acked.has(id));
  const extra = [...delivered.keys()].filter(id => !remaining.includes(id) && !id.startsWith("down-"));
  expect(cameBack).toEqual([]);
  expect(remaining.filter(id => !delivered.has(id))).toEqual([]);
  expect(extra).toEqual([]);
  expect(delivered.has(held!.taskId)).toBe(true);
  expect(delivered.get(held!.taskId)!.attempt).toBe(held!.attempt + 1);
  // Nothing left.
  expect(await b.call("worker.queue.fetchTask", { serviceId, workerId: "w3", timeToRecover: 30 }, OWNER)).toBeNull();

  // While Cassandra was down, calls failed (none answered from a stale state), with retryable errors.
  expect(downErrors.filter(e => e.includes("succeeded") || e.includes("answered"))).toEqual([]);
  expect(notRetryable).toEqual([]);
  expect(downErrors.filter(e => !/STORAGE_UNAVAILABLE|QUEUE_OWNERSHIP_LOST/.test(e))).toEqual([]);
});
