/**
 * Fault run on a 3-node Cassandra (replication factor 3, LOCAL_QUORUM / LOCAL_SERIAL): two
 * standalone queue nodes over NATS, producers and workers in this process with the history
 * checker; mid-run one Cassandra node gets SIGKILL, and is started again 20 s later. The run ends
 * when every task is acked or the queue says nothing is left; the verdict says what was lost or
 * held by two workers (both must be 0).
 *
 *   npx tsx bench/fault-cassandra.bench.ts            # starts the cluster on 127.0.0.2-4 (npm run cassandra -- --nodes 3)
 *   FAULT_TASKS=20000 npx tsx bench/fault-cassandra.bench.ts
 */
import { randomUUID } from "node:crypto";
import { startLocalCluster } from "../scripts/cassandra-launcher";
import { History } from "../test/helpers/history";
import { call, clientBroker, freshNames, sleep, StandaloneNode, value256, waitForQueueNodes, meta } from "./cluster";

const TASKS = Number(process.env.FAULT_TASKS ?? 10_000);
const WORKERS = 16;
const TTR = 5;

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
}

async function main(): Promise<void> {
  const cluster = await startLocalCluster({ nodes: 3, commitlogSync: "batch" });
  const { namespace, keyspace } = freshNames("fault");
  const env = {
    CASSANDRA_CONTACT_POINTS: cluster.contactPoints.join(","),
    CASSANDRA_LOCAL_DC: cluster.localDataCenter,
    QUEUE_REPLICATION_FACTOR: "3",
  };
  const nodes = ["fault-a", "fault-b"].map(
    (nodeId, i) => new StandaloneNode({ namespace, keyspace, nodeId, port: 3131 + i, env }),
  );
  const broker = await clientBroker(namespace);
  const history = new History();
  const serviceId = randomUUID();
  const errors = new Map<string, number>();
  const count = (e: unknown) => {
    const k = (e as { type?: string; name?: string }).type ?? (e as Error).name ?? "error";
    errors.set(k, (errors.get(k) ?? 0) + 1);
  };
  try {
    await Promise.all(nodes.map(n => n.ready));
    await waitForQueueNodes(broker, 2);
    let added = 0;
    let acked = 0;
    let stop = false;
    const t0 = Date.now();
    const producing = (async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let n = next++; n < TASKS; n = next++) {
            const taskId = `f-${n}`;
            for (;;) {
              try {
                await broker.call("worker.queue.add", { serviceId, value: value256(n), taskId }, { meta });
                break;
              } catch (err) {
                count(err);
                await sleep(50);
              }
            }
            history.add(taskId);
            added++;
          }
        }),
      );
    })();
    const working = Array.from({ length: WORKERS }, async (_, w) => {
      const workerId = `fw-${w}`;
      while (!stop) {
        try {
          const task = await broker.call<{ taskId: string; attempt: number; leaseUntil: number } | null, object>(
            "worker.queue.fetchTask",
            { serviceId, workerId, timeToRecover: TTR },
            { meta },
          );
          if (!task) {
            await sleep(20);
            continue;
          }
          history.deliver({ worker: workerId, ...task, timeToRecoverMs: TTR * 1000, at: Date.now() });
          const res = await broker.call<{ ok: boolean }, object>(
            "worker.queue.ackTask",
            { serviceId, workerId, taskId: task.taskId },
            { meta },
          );
          if (res.ok) {
            history.ack(task.taskId, workerId);
            acked++;
          }
        } catch (err) {
          count(err);
          await sleep(50);
        }
      }
    });
    const progress = setInterval(() => log(`added ${added}, acked ${acked}`), 5000);
    while (acked < TASKS / 3) await sleep(100);
    const victim = cluster.nodes[1]!;
    log(`SIGKILL of Cassandra node ${victim.address} (pid ${victim.pid})`);
    victim.signal("SIGKILL");
    const killedAt = Date.now();
    await sleep(20_000);
    log(`starting ${victim.address} again (acked ${acked} meanwhile: ${acked} total)`);
    await victim.start();
    log(`${victim.address} is back after ${Math.round((Date.now() - killedAt) / 1000)} s`);
    await producing;
    for (;;) {
      await sleep(1000);
      if (acked >= TASKS) break;
      const s = await call<{ ready: number; inFlight: number; delayed: number }>(broker, "worker.queue.stats", {
        serviceId,
      });
      if (s.ready + s.inFlight + s.delayed === 0) break;
    }
    stop = true;
    await Promise.all(working);
    clearInterval(progress);
    const v = history.verdict();
    log(
      `${TASKS} tasks in ${Math.round((Date.now() - t0) / 1000)} s: lost ${v.lost.length}, held by two workers ${v.duplicatedWhileLeased.length}, ` +
        `delivered after ack ${v.deliveredAfterAck.length}, completed twice ${v.completedTwice.length}, redelivered after expiry ${v.redeliveredAfterExpiry}`,
    );
    log(`errors the clients saw (and retried): ${JSON.stringify(Object.fromEntries(errors))}`);
    if (v.lost.length + v.duplicatedWhileLeased.length + v.deliveredAfterAck.length + v.completedTwice.length > 0) {
      process.exitCode = 1;
    }
  } finally {
    await broker.stop();
    await Promise.all(nodes.map(n => n.stop()));
    await cluster.stop();
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  err => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
