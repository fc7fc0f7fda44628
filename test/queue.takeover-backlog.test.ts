/**
 * A takeover with a 200,000-task backlog while workers run (G8, G9): the new owner reads its last
 * checkpoint and the events after it, not the backlog, and the run loses nothing, holds nothing
 * twice, delivers nothing after its ack and completes nothing twice (history checker). The run
 * ends when every task is acked or the queue says nothing is left; never on a clock.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { History } from "./helpers/history";
import { owner, startQueueCluster } from "./helpers/queue-cluster";

const TASKS = 200_000;
const WORKERS = 24;
const TTR_SECONDS = 5;

let client: Client;
const keyspace = uniqueKeyspace("queue_takeover_backlog");
const opts = owner("owner-b");
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

interface EngineView {
  ownedQueues(): string[];
  host: { get(key: { id: string }): { takeover: { events: number; derived: number } } | undefined };
}
const engineOf = (b: ServiceBroker) => (b.getLocalService("worker.queue") as unknown as { engine: EngineView }).engine;

async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const e = err as { retryable?: boolean; name?: string };
      if (!e.retryable && e.name !== "ServiceNotAvailableError" && e.name !== "RequestRejectedError") throw err;
      await sleep(20);
    }
  }
}

test(`a takeover with a ${TASKS.toLocaleString("en")}-task backlog, workers running: the new owner reads only since its checkpoint; nothing lost or held twice`, async () => {
  const brokers = await startQueueCluster(3, { keyspace, client });
  const serviceId = randomUUID();
  const queue = `owner-b/${serviceId}`;
  const history = new History();
  const live = () => brokers.filter(b => b.started);
  const pick = (i: number) => live()[i % live().length]!;
  try {
    // The backlog: 64 producers, every id chosen by the caller (a retried add cannot enqueue twice).
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async (_, p) => {
        for (let n = next++; n < TASKS; n = next++) {
          const taskId = `b-${n}`;
          await retry(() => pick(p + n).call("worker.queue.add", { serviceId, value: { n }, taskId }, opts));
          history.add(taskId);
        }
      }),
    );

    let acked = 0;
    let stopped = false;
    const working = Array.from({ length: WORKERS }, async (_, w) => {
      const workerId = `w-${w}`;
      let calls = 0;
      while (!stopped) {
        const task = await retry(() =>
          pick(w + calls++).call<{ taskId: string; attempt: number; leaseUntil: number } | null, object>(
            "worker.queue.fetchTask",
            { serviceId, workerId, timeToRecover: TTR_SECONDS },
            opts,
          ),
        );
        if (!task) {
          await sleep(50);
          continue;
        }
        history.deliver({ worker: workerId, ...task, timeToRecoverMs: TTR_SECONDS * 1000, at: Date.now() });
        const res = await retry(() =>
          pick(w + calls++).call<{ ok: boolean }, object>(
            "worker.queue.ackTask",
            { serviceId, workerId, taskId: task.taskId },
            opts,
          ),
        );
        if (res.ok) {
          history.ack(task.taskId, workerId);
          acked++;
        }
      }
    });

    // Mid-run, the owner stops; another node takes the queue over with the backlog still there.
    while (acked < 3000) await sleep(100);
    const first = brokers.find(b => engineOf(b).ownedQueues().includes(queue))!;
    await first.stop();
    let takeover: { events: number; derived: number } | undefined;
    while (!takeover) {
      await sleep(100);
      const now = live().find(b => engineOf(b).ownedQueues().includes(queue));
      takeover = now && engineOf(now).host.get({ id: queue })?.takeover;
    }
    // Its reading does not depend on the 197,000 tasks still waiting: at most a few checkpoints' worth.
    expect(takeover.events).toBeLessThan(10_000);
    expect(takeover.derived).toBeLessThan(10_000);

    // Drain: done when everything is acked, or when the queue says nothing is waiting or running.
    for (;;) {
      await sleep(1000);
      if (acked >= TASKS) break;
      const s = await retry(() =>
        pick(0).call<{ ready: number; inFlight: number; delayed: number }, object>(
          "worker.queue.stats",
          { serviceId },
          opts,
        ),
      );
      if (s.ready + s.inFlight + s.delayed === 0) break;
    }
    stopped = true;
    await Promise.all(working);

    const v = history.verdict();
    expect(v.tasks).toBe(TASKS);
    expect(v.lost).toEqual([]);
    expect(v.duplicatedWhileLeased).toEqual([]);
    expect(v.deliveredAfterAck).toEqual([]);
    expect(v.completedTwice).toEqual([]);
  } finally {
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
}, 1_200_000);
