/**
 * Failover benchmark: three standalone `npm start` nodes over NATS, 6 queues spread over them,
 * 4 workers and a producer per queue in this (separate) client process (calls time out after 1 s
 * and go to another node). Once everything runs, one
 * node that owns queues is killed (SIGKILL) or paused (SIGSTOP, SIGCONT 10 s later). Prints, per
 * queue, the longest pause between two completions around the fault: queues of the live nodes
 * should keep going (no gap over 1 s), the victim's queues resume within a few seconds.
 *
 *   npx tsx bench/failover.bench.ts [kill|pause]
 */
import { randomUUID } from "node:crypto";
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
  meta,
} from "./cluster";

const how = process.argv[2] === "pause" ? "pause" : "kill";
const QUEUES = 6;
const WORKERS = 4;
/**
 * The clients' own patience: a call to a node that died or froze gives up after this and goes to
 * another node (a client's pending calls to a dead entry node are the client's business, not the
 * queue's; without it every call in flight there would wait out Moleculer's detection).
 */
const CALL_TIMEOUT_MS = 1000;

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`);
}

async function main(): Promise<void> {
  const cassandra = await ensureCassandra({ reuseIfRunning: true });
  process.env.CASSANDRA_CONTACT_POINTS = cassandra.contactPoints.join(",");
  process.env.CASSANDRA_LOCAL_DC = cassandra.localDataCenter;
  const { namespace, keyspace } = freshNames("failover");
  const nodes = ["fo-a", "fo-b", "fo-c"].map(
    (nodeId, i) => new StandaloneNode({ namespace, keyspace, nodeId, port: 3121 + i }),
  );
  await Promise.all(nodes.map(n => n.ready));
  const broker = await clientBroker(namespace);
  let stop = false;
  try {
    await waitForQueueNodes(broker, 3);
    await sleep(2000);
    const queues = Array.from({ length: QUEUES }, () => randomUUID());
    for (const serviceId of queues) await call(broker, "worker.queue.stats", { serviceId });
    await sleep(3000);
    const owners = new Map<string, string>();
    for (const q of queues) owners.set(q, (await ownerOf(broker, nodes, q))?.o.nodeId ?? "?");
    log(`owners: ${queues.map(q => owners.get(q)).join(", ")}`);
    const victim = nodes.find(n => [...owners.values()].includes(n.o.nodeId))!;
    const survivors = nodes.filter(n => n !== victim).map(n => n.o.nodeId);
    const completions = new Map<string, number[]>(queues.map(q => [q, []]));

    // Producers keep each queue at about 200 waiting tasks; workers call the live nodes round robin
    // (a careful client: a node it sees die is not called again).
    const alive = () => (victimDown ? survivors : nodes.map(n => n.o.nodeId));
    let victimDown = false;
    const once = (action: string, params: object, nodeID: string) =>
      broker.call(action, params, { meta, nodeID, timeout: CALL_TIMEOUT_MS });
    const work = queues.flatMap((serviceId, qi) => [
      (async () => {
        let n = 0;
        while (!stop) {
          try {
            const s = (await once("worker.queue.stats", { serviceId }, alive()[n % alive().length]!)) as {
              ready: number;
            };
            for (let i = s.ready; i < 200 && !stop; i++) {
              await once("worker.queue.add", { serviceId, value: value256(n++) }, alive()[n % alive().length]!).catch(
                () => undefined,
              );
            }
          } catch {
            // the next round tries another node
          }
          await sleep(100);
        }
      })(),
      ...Array.from({ length: WORKERS }, async (_, w) => {
        const workerId = `w-${qi}-${w}`;
        let c = 0;
        while (!stop) {
          try {
            const target = alive()[c++ % alive().length]!;
            const v = await once("worker.queue.fetch", { serviceId, workerId, timeToRecover: 10 }, target);
            if (v === null) {
              await sleep(20);
              continue;
            }
            const ok = await once("worker.queue.ack", { serviceId, workerId }, target);
            if (ok) completions.get(serviceId)!.push(Date.now());
          } catch {
            await sleep(20);
          }
        }
      }),
    ]);
    const progress = setInterval(() => {
      const t = Date.now();
      log(
        `completions in the last 2 s: ${queues.map(q => completions.get(q)!.filter(x => x > t - 2000).length).join(" ")}`,
      );
    }, 2000);

    await sleep(8000);
    const faultAt = Date.now();
    log(
      `${how === "kill" ? "SIGKILL" : "SIGSTOP"} ${victim.o.nodeId} (owner of ${queues.filter(q => owners.get(q) === victim.o.nodeId).length} queues)`,
    );
    victim.signal(how === "kill" ? "SIGKILL" : "SIGSTOP");
    victimDown = true;
    if (how === "pause") {
      await sleep(10_000);
      victim.signal("SIGCONT");
      log(`SIGCONT ${victim.o.nodeId}`);
    }
    await sleep(how === "pause" ? 10_000 : 20_000);
    stop = true;
    clearInterval(progress);
    await Promise.all(work);

    for (const q of queues) {
      const times = completions.get(q)!.filter(t => t >= faultAt - 5000);
      let gap = 0;
      let at = 0;
      for (let i = 1; i < times.length; i++) {
        if (times[i]! - times[i - 1]! > gap) {
          gap = times[i]! - times[i - 1]!;
          at = times[i - 1]!;
        }
      }
      const after = times.filter(t => t > faultAt);
      const mine = owners.get(q) === victim.o.nodeId;
      log(
        `queue ${q.slice(0, 8)} owned by ${owners.get(q)}${mine ? " (the victim's)" : ""}: ` +
          `longest gap ${gap} ms (${at ? `from +${at - faultAt} ms` : "-"}), first completion after the fault at +${after[0] ? after[0] - faultAt : "none"} ms, ` +
          `${Math.round(after.length / ((Date.now() - faultAt) / 1000))} tasks/s after`,
      );
    }
  } finally {
    stop = true;
    await broker.stop();
    for (const n of nodes) {
      n.signal("SIGCONT");
      await n.stop();
    }
    await dropKeyspace(keyspace);
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
