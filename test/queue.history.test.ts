/**
 * G1-G4 under load and takeover: 16 workers spread over three brokers (so most calls are forwarded
 * to the owner), 2,000 tasks, workers that sometimes abandon a task, half the workers taking their
 * next task from their ack (`ackTask` with `next`), and the owning broker stopped mid-run. The history checker must find no lost task and no task held by two workers at once.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { History } from "./helpers/history";
import { owner, startQueueCluster } from "./helpers/queue-cluster";

let client: Client;
const keyspace = uniqueKeyspace("queue_history");
const opts = owner("owner-h");

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

interface Fetched {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: { n: number };
}

async function runWorkload(brokers: ServiceBroker[], tasks: number, workers: number, midRun?: () => Promise<void>) {
  const serviceId = randomUUID();
  const history = new History();
  const live = () => brokers.filter(b => b.started);
  const pick = (i: number) => {
    const l = live();
    return l[i % l.length]!;
  };
  // Producers: add through every broker.
  let added = 0;
  await Promise.all(
    Array.from({ length: 8 }, async (_, p) => {
      for (let i = p; i < tasks; i += 8) {
        const taskId = `task-${i}`;
        for (;;) {
          try {
            await pick(i).call("worker.queue.add", { serviceId, value: { n: i }, taskId }, opts);
            break;
          } catch (err) {
            if (!(err as { retryable?: boolean }).retryable) throw err;
          }
        }
        history.add(taskId);
        added++;
      }
    }),
  );
  expect(added).toBe(tasks);

  let acked = 0;
  let disturbed = false;
  const ttrSeconds = 1;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      const workerId = `worker-${w}`;
      // Odd workers ack with `next: true`: the ack's answer brings their next task (no fetch).
      const chained = w % 2 === 1;
      let brought: Fetched | null = null;
      let idle = 0;
      let calls = 0;
      while (idle < 40) {
        const broker = pick(w + calls++);
        let task: Fetched | null = brought;
        const fetched = brought === null;
        brought = null;
        try {
          task ??= await broker.call<Fetched | null, object>(
            "worker.queue.fetchTask",
            { serviceId, workerId, timeToRecover: ttrSeconds },
            opts,
          );
        } catch (err) {
          if ((err as { retryable?: boolean }).retryable || !broker.started) continue;
          throw err;
        }
        if (!task) {
          idle++;
          await new Promise(r => setTimeout(r, 50));
          continue;
        }
        idle = 0;
        if (fetched) history.deliver({ worker: workerId, ...task, timeToRecoverMs: ttrSeconds * 1000, at: Date.now() });
        if (task.value.n % 97 === 13 && task.attempt === 1) {
          // This worker "crashes" on the task: it never acks, so the task must come back after its lease.
          continue;
        }
        try {
          const res: { ok: boolean; next?: Fetched | null } = await pick(w + calls++).call(
            "worker.queue.ackTask",
            chained
              ? {
                  serviceId,
                  workerId,
                  taskId: task.taskId,
                  result: task.value.n,
                  next: true,
                  timeToRecover: ttrSeconds,
                }
              : { serviceId, workerId, taskId: task.taskId, result: task.value.n },
            opts,
          );
          if (res.ok) {
            history.ack(task.taskId, workerId);
            acked++;
          }
          if (res.next) {
            brought = res.next;
            history.deliver({ worker: workerId, ...res.next, timeToRecoverMs: ttrSeconds * 1000, at: Date.now() });
          }
        } catch (err) {
          if (!(err as { retryable?: boolean }).retryable) throw err;
        }
        if (midRun && !disturbed && acked > tasks / 3) {
          disturbed = true;
          await midRun();
        }
      }
    }),
  );
  return history.verdict();
}

test("16 workers, 2,000 tasks, 3 brokers, owner stopped mid-run: nothing lost, nothing held twice", async () => {
  const brokers = await startQueueCluster(3, { keyspace, client, engine: { bucketSize: 500 } });
  try {
    const verdict = await runWorkload(brokers, 2000, 16, async () => {
      const ownerBroker = brokers.find(b => (b.getLocalService("worker.queue") as any).engine.ownedQueues().length > 0);
      expect(ownerBroker).toBeDefined();
      await ownerBroker!.stop();
    });
    expect(verdict.tasks).toBe(2000);
    expect(verdict.lost).toEqual([]);
    expect(verdict.duplicatedWhileLeased).toEqual([]);
    expect(verdict.deliveredAfterAck).toEqual([]);
    expect(verdict.completedTwice).toEqual([]);
    // The abandoned tasks came back: some tasks were redelivered after expiry.
    expect(verdict.redeliveredAfterExpiry).toBeGreaterThanOrEqual(20);
  } finally {
    await Promise.all(brokers.filter(b => b.started).map(b => b.stop()));
  }
}, 240_000);
