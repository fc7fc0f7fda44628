/**
 * Placement: new queues spread over the queue nodes (rendezvous hashing with a load cap), a node
 * joining receives about its share, a node leaving spreads its queues over the others; and under
 * load, with tasks moving between owners as nodes join and leave, nothing is lost or held twice.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { History } from "./helpers/history";
import { owner, startQueueBroker, startQueueCluster, waitFor } from "./helpers/queue-cluster";

let client: Client;
const keyspace = uniqueKeyspace("queue_placement");
const opts = owner("owner-p");
const engine = { beatIntervalMs: 200, nodeTimeoutMs: 1000, rebalanceAfterMs: 500 };
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

const owned = (b: ServiceBroker): string[] =>
  b.started
    ? (b.getLocalService("worker.queue") as unknown as { engine: { ownedQueues(): string[] } }).engine.ownedQueues()
    : [];

/**
 * Who owns each queue, once nothing has moved for `quietMs` while every queue gets calls (a queue
 * an owner gives away is placed again at its next call; placement settles in a few seconds).
 */
async function settled(brokers: ServiceBroker[], queues: string[] = [], quietMs = 3000): Promise<Map<string, string>> {
  let last = "";
  let since = Date.now();
  for (let i = 0; i < 600; i++) {
    const entry = brokers.filter(b => b.started)[i % brokers.filter(b => b.started).length]!;
    for (const serviceId of queues) await entry.call("worker.queue.stats", { serviceId }, opts);
    const map = new Map<string, string>();
    for (const b of brokers) for (const q of owned(b)) map.set(q, b.nodeID);
    const now = JSON.stringify([...map].sort());
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return map;
    await sleep(100);
  }
  throw new Error("placement never settled (queues kept moving for a minute)");
}

function counts(map: Map<string, string>, brokers: ServiceBroker[]): Record<string, number> {
  const out: Record<string, number> = Object.fromEntries(brokers.filter(b => b.started).map(b => [b.nodeID, 0]));
  for (const n of map.values()) out[n] = (out[n] ?? 0) + 1;
  return out;
}

test("24 queues over 3 nodes: each owns 6 to 10; a joining node takes about its share, a leaving one's queues spread", async () => {
  const brokers = await startQueueCluster(3, { keyspace, client, engine });
  try {
    const queues = Array.from({ length: 24 }, () => randomUUID());
    // New queues, through every node in turn.
    for (const [i, serviceId] of queues.entries()) {
      await brokers[i % 3]!.call("worker.queue.stats", { serviceId }, opts);
    }
    const first = await settled(brokers, queues);
    expect(first.size).toBe(24);
    for (const n of Object.values(counts(first, brokers))) {
      expect(n).toBeGreaterThanOrEqual(6);
      expect(n).toBeLessThanOrEqual(10);
    }

    // A fourth node joins: over-cap owners give queues away, the next call places them.
    const joined = await startQueueBroker("node-4", { keyspace, client, engine, namespace: brokers[0]!.namespace });
    brokers.push(joined);
    await waitFor(() => brokers.every(b => b.registry.nodes.list({}).filter(x => x.available).length === 4), 20_000);
    const afterJoin = await settled(brokers, queues);
    expect(afterJoin.size).toBe(24);
    const joinedShare = counts(afterJoin, brokers)["node-4"] ?? 0;
    expect(joinedShare).toBe(6);
    const movedOnJoin = [...afterJoin].filter(([q, n]) => first.get(q) !== n);
    // The joining node's share moved to it. Placement decides from the loads nodes beat every
    // 500 ms: on a busy machine a call can place a released queue on an old node whose last beat
    // was stale, and rebalancing moves it once more. How many such moves happen depends on the
    // machine's speed, so the verdict is the placement once settled; the extra moves are printed.
    expect(movedOnJoin.filter(([, n]) => n === "node-4").length).toBe(joinedShare);
    for (const n of Object.values(counts(afterJoin, brokers))) expect(n).toBe(6);
    console.log(`join: ${movedOnJoin.length - joinedShare} queue(s) also moved between the old nodes`);

    // node-2 leaves: its queues go to the others at their next call; the others' stay where they are.
    const leaving = brokers.find(b => b.nodeID === "node-2")!;
    const leftBehind = [...afterJoin].filter(([, n]) => n === "node-2").map(([q]) => q);
    await leaving.stop();
    const afterLeave = await settled(brokers, queues);
    expect(afterLeave.size).toBe(24);
    const movedOnLeave = [...afterLeave].filter(([q, n]) => afterJoin.get(q) !== n).map(([q]) => q);
    // Every queue of the leaving node moved (and others only by stale loads, as above).
    expect(leftBehind.every(q => movedOnLeave.includes(q))).toBe(true);
    console.log(`leave: ${movedOnLeave.length - leftBehind.length} other queue(s) moved`);
    for (const n of Object.values(counts(afterLeave, brokers))) expect(n).toBe(8);
  } finally {
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
}, 180_000);

interface Fetched {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: { n: number };
}

test("under load, a node joining and one leaving move queues between owners: nothing lost, nothing held twice", async () => {
  const brokers = await startQueueCluster(3, { keyspace, client, engine });
  const queues = Array.from({ length: 6 }, () => randomUUID());
  const histories = new Map(queues.map(q => [q, new History()]));
  const live = () => brokers.filter(b => b.started);
  const pick = (i: number) => live()[i % live().length]!;
  const perQueue = 250;
  let producersDone = false;
  let drained = false;
  const acked = new Map<string, Set<string>>(queues.map(q => [q, new Set<string>()]));
  const retry = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (
          !(err as { retryable?: boolean }).retryable &&
          (err as { name?: string }).name !== "ServiceNotAvailableError"
        ) {
          throw err;
        }
        await sleep(20);
      }
    }
  };
  try {
    const producing = (async () => {
      for (let i = 0; i < perQueue; i++) {
        await Promise.all(
          queues.map(async (serviceId, qi) => {
            const taskId = `p-${qi}-${i}`;
            await retry(() => pick(i + qi).call("worker.queue.add", { serviceId, value: { n: i }, taskId }, opts));
            histories.get(serviceId)!.add(taskId);
          }),
        );
        if (i % 25 === 0) await sleep(50);
      }
      producersDone = true;
    })();
    const ttr = 2;
    const working = queues.flatMap((serviceId, qi) =>
      Array.from({ length: 3 }, async (_, w) => {
        const workerId = `w-${qi}-${w}`;
        let calls = 0;
        while (!drained) {
          const task = await retry(() =>
            pick(qi + w + calls++).call<Fetched | null, object>(
              "worker.queue.fetchTask",
              { serviceId, workerId, timeToRecover: ttr },
              opts,
            ),
          );
          if (!task) {
            await sleep(30);
            continue;
          }
          histories.get(serviceId)!.deliver({ worker: workerId, ...task, timeToRecoverMs: ttr * 1000, at: Date.now() });
          const res = await retry(() =>
            pick(qi + w + calls++).call<{ ok: boolean }, object>(
              "worker.queue.ackTask",
              { serviceId, workerId, taskId: task.taskId },
              opts,
            ),
          );
          if (res.ok) {
            histories.get(serviceId)!.ack(task.taskId, workerId);
            acked.get(serviceId)!.add(task.taskId);
          }
        }
      }),
    );
    const total = () => [...acked.values()].reduce((n, s) => n + s.size, 0);
    await waitFor(() => total() >= (queues.length * perQueue) / 4, 120_000);
    const joined = await startQueueBroker("node-4", { keyspace, client, engine, namespace: brokers[0]!.namespace });
    brokers.push(joined);
    await waitFor(() => total() >= (queues.length * perQueue) / 2, 120_000);
    await brokers[1]!.stop();
    await producing;
    // Done when every task is acked, or when the queues say nothing is left anywhere.
    while (!drained) {
      await sleep(500);
      if (total() >= queues.length * perQueue) break;
      const stats = await Promise.all(
        queues.map(serviceId =>
          retry(() =>
            pick(0).call<{ ready: number; inFlight: number; delayed: number }, object>(
              "worker.queue.stats",
              { serviceId },
              opts,
            ),
          ),
        ),
      );
      if (producersDone && stats.every(s => s.ready + s.inFlight + s.delayed === 0)) break;
    }
    drained = true;
    await Promise.all(working);
    for (const [serviceId, history] of histories) {
      const v = history.verdict();
      expect({ serviceId, tasks: v.tasks }).toEqual({ serviceId, tasks: perQueue });
      expect(v.lost).toEqual([]);
      expect(v.duplicatedWhileLeased).toEqual([]);
      expect(v.deliveredAfterAck).toEqual([]);
      expect(v.completedTwice).toEqual([]);
    }
    // The queues really moved: the joining node owns some, and node-2 none.
    const map = await settled(live(), queues, 1000);
    expect([...map.values()]).not.toContain("node-2");
  } finally {
    drained = true;
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
}, 300_000);
