/**
 * G1-G4 with real processes: three queue nodes (test/fixtures/queue-node.ts) over NATS, and this
 * test process as a pure client (its broker has no queue service, so every call lands on a node).
 * Calls are spread over the nodes with the `nodeID` option, so most of them reach a non-owner and
 * are forwarded. 16 workers (ttr 1 or 2 s) consume >= 1,000 tasks while producers keep adding;
 * some workers "crash" on a task (they never ack it and come back under a new identity) and try a
 * late ack with the old identity once their lease has run out. Mid-run:
 *   (a) the owner of the queue gets SIGKILL: another node must take over and nothing be lost;
 *   (b) the owner gets SIGSTOP for longer than the heartbeat timeout and the owner lease, another
 *       node takes over, then SIGCONT: the stale owner is attacked with fetches and acks sent
 *       straight to it (queued while it is frozen, and sent right after it wakes). It must hand
 *       out nothing on its own and must abandon the queue.
 * The history checker must find no lost task, no task held by two workers at once, no delivery
 * after a successful ack, no task completed twice; re-fetches inside a lease must give the held
 * task (G3), and an ack must not answer ok once another worker got a later attempt (G4).
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { ServiceBroker } from "moleculer";
import { defaultEngineOptions } from "../lib/queue/options";
import { migrateSchema } from "../lib/queue/schema";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { eventsOfLogRow } from "./helpers/log-rows";
import { History } from "./helpers/history";
import {
  killAllQueueNodes,
  liveQueueNodePids,
  startQueueNodes,
  uniqueNamespace,
  type QueueNodeProcess,
} from "./helpers/processes";

const NATS = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const OWNER_ID = "owner-crash";
const TASKS = 1200;
const WORKERS = 16;
/** Tasks added before the workers start, and the most tasks added but not acked at any time. */
const PREFILL = 500;
const BACKLOG = 600;
/**
 * A call that keeps failing retryably for this long is an error of the run (a stuck cluster), never
 * a verdict on tasks: whether a task is lost is decided from the queue's state once it has drained.
 */
const CALL_GIVE_UP_MS = 120_000;

const keyspace = uniqueKeyspace("queue_crash");
let client: Client;
let clientBroker: ServiceBroker | undefined;
let nodes: QueueNodeProcess[] = [];

jest.setTimeout(300_000);

beforeAll(async () => {
  client = await testClient();
  // Created once here, so that the three nodes starting together do not race on migrations.
  await migrateSchema(client, { ...defaultEngineOptions, keyspace });
});

afterEach(async () => {
  await clientBroker?.stop().catch(() => undefined);
  clientBroker = undefined;
  await killAllQueueNodes();
  nodes = [];
});

afterAll(async () => {
  await killAllQueueNodes();
  expect(liveQueueNodePids()).toEqual([]);
  await dropKeyspace(client, keyspace).catch(() => undefined);
  await client?.shutdown();
});

const sleep = (ms: number) => new Promise(r => setTimeout(r, Math.max(0, ms)));

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

interface OwnerRow {
  node: string;
  rangeId: number;
}

async function readOwner(queue: string): Promise<OwnerRow | null> {
  const rs = await client.execute(`SELECT node, range_id FROM ${keyspace}.queue_owner WHERE queue = ?`, [queue], {
    prepare: true,
  });
  const row = rs.first();
  if (!row) return null;
  return { node: (row["node"] as string | null) ?? "", rangeId: Number(row["range_id"]) };
}

/**
 * For diagnosis: every event of the given tasks in the queue's log partitions (retired ones too,
 * they are only dropped from queue_owner.buckets), in log order, as one line each.
 */
async function taskEvents(queue: string, taskIds: string[]): Promise<string[]> {
  const wanted = new Set(taskIds);
  const parts = await client.execute(`SELECT DISTINCT queue, range_id, bucket FROM ${keyspace}.queue_log`);
  const mine = parts.rows
    .filter(r => r["queue"] === queue)
    .map(r => ({ range: r["range_id"], bucket: r["bucket"] as number }))
    .sort((a, b) => Number(a.range) - Number(b.range) || a.bucket - b.bucket);
  const out: string[] = [];
  for (const part of mine) {
    const rs = await client.execute(
      `SELECT pos, kind, ev, evs FROM ${keyspace}.queue_log WHERE queue = ? AND range_id = ? AND bucket = ?`,
      [queue, part.range, part.bucket],
      { prepare: true, fetchSize: 5000 },
    );
    for (const e of rs.rows.flatMap(eventsOfLogRow)) {
      if (!wanted.has(e.taskId)) continue;
      const fields = Object.entries(e)
        .filter(([k, v]) => v !== undefined && !["value", "token", "result", "progress", "error"].includes(k))
        .map(([k, v]) => `${k}=${String(v)}`);
      out.push(`[${part.range}/${part.bucket}] ${fields.join(" ")}`);
    }
  }
  return out;
}

/** Starts the nodes and a client broker in a fresh namespace; waits until the client sees every node's queue service. */
async function startCluster(prefix: string): Promise<{ nodes: QueueNodeProcess[]; broker: ServiceBroker }> {
  const namespace = uniqueNamespace(prefix);
  nodes = await startQueueNodes(3, { namespace, keyspace, prefix, transporter: NATS });
  clientBroker = new ServiceBroker({
    nodeID: `client-${randomBytes(3).toString("hex")}`,
    namespace,
    transporter: { type: "NATS", options: { url: NATS } },
    logger: false,
    // Longer than the nodes' 3 s: a frozen node stays in this client's registry, so calls can be
    // sent straight to it while it is frozen (they are answered when it wakes).
    heartbeatInterval: 1,
    heartbeatTimeout: 30,
    requestTimeout: 8_000,
    metrics: false,
    tracing: false,
  });
  await clientBroker.start();
  const broker = clientBroker;
  await waitFor(
    "client sees every node's queue service",
    () =>
      nodes.every(n => {
        const info = broker.registry.nodes.get(n.nodeID);
        return info?.available === true && (info.services ?? []).some(s => s["name"] === "worker.queue");
      }),
    20_000,
  );
  // ... and until every node sees every other one: nodes that do not see each other yet take the
  // queue from one another at first (safe, but slow: ownership ping-pongs between them).
  await waitFor(
    "every node sees every other node",
    async () => {
      const views = await Promise.all(
        nodes.map(n =>
          broker.call<{ id: string; available: boolean }[], object>(
            "$node.list",
            { onlyAvailable: true },
            { nodeID: n.nodeID },
          ),
        ),
      );
      return views.every(list => nodes.every(n => list.some(x => x.id === n.nodeID && x.available)));
    },
    20_000,
  );
  return { nodes, broker };
}

interface Fetched {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  value: { n: number };
}

interface AckResult {
  ok: boolean;
  reason?: string;
  taskId?: string;
}

const RETRY_NAMES = new Set(["RequestTimeoutError", "ServiceNotAvailableError", "RequestRejectedError"]);

function isRetryable(err: unknown): boolean {
  const e = err as { retryable?: boolean; name?: string };
  return e?.retryable === true || RETRY_NAMES.has(e?.name ?? "");
}

function describe_(err: unknown): string {
  const e = err as { name?: string; type?: string; message?: string; data?: unknown };
  return `${e?.name}${e?.type ? `/${e.type}` : ""}: ${e?.message} ${e?.data ? JSON.stringify(e.data) : ""}`;
}

/** Everything one scenario records besides the history. */
class Scenario {
  readonly serviceId = randomUUID();
  readonly queue = `${OWNER_ID}/${this.serviceId}`;
  readonly history = new History();
  readonly acked = new Set<string>();
  added = 0;
  producersDone = false;
  readonly errors: string[] = [];
  readonly retriedErrors = new Map<string, number>();
  readonly lateAcks = new Map<string, number>();
  readonly refusedAcks = new Map<string, number>();
  readonly owners: { node: string; rangeId: number }[] = [];
  /** What happened when (ms since the scenario started): owner changes, signals, first errors. */
  readonly timeline: string[] = [];
  callsToOwner = 0;
  callsToOthers = 0;
  abandoned = 0;
  refetches = 0;
  /** G3 violations: a re-fetch inside the lease that did not give the held task. */
  readonly unstableFetches: string[] = [];
  readonly refetchAfterExpiry = new Map<string, number>();
  /** Client-side record of every delivery: worker, attempt, lease end, when, through which node. */
  private readonly deliveries = new Map<string, string[]>();

  deliveriesOf(taskId: string): string[] {
    return this.deliveries.get(taskId) ?? [];
  }

  private readonly attempts = new Map<string, { worker: string; attempt: number }[]>();
  private readonly okAcks: { taskId: string; worker: string }[] = [];

  /** Records a delivery in the history and in the client-side log. */
  delivered(workerId: string, t: Fetched, ttr: number, via: string): void {
    const at = Date.now();
    this.history.deliver({ worker: workerId, ...t, timeToRecoverMs: ttr * 1000, at });
    const list = this.deliveries.get(t.taskId) ?? [];
    list.push(`${workerId}#${t.attempt} until ${t.leaseUntil} at ${at} via ${via}`);
    this.deliveries.set(t.taskId, list);
    const attempts = this.attempts.get(t.taskId) ?? [];
    attempts.push({ worker: workerId, attempt: t.attempt });
    this.attempts.set(t.taskId, attempts);
  }

  /** An ack that answered ok: true. */
  recordAck(taskId: string, workerId: string): void {
    this.history.ack(taskId, workerId);
    this.acked.add(taskId);
    this.okAcks.push({ taskId, worker: workerId });
  }

  /**
   * G4 (which the history checker does not see): an ack that answered ok although a later attempt
   * of the task had been delivered to another worker. A successful ack ends the task, so a later
   * attempt can only have been claimed before the ack ran: the acking worker was no longer the holder.
   */
  ackedByNonHolder(): string[] {
    const out: string[] = [];
    for (const { taskId, worker } of this.okAcks) {
      const all = this.attempts.get(taskId) ?? [];
      const mine = Math.max(-1, ...all.filter(d => d.worker === worker).map(d => d.attempt));
      const later = all.filter(d => d.worker !== worker && d.attempt > mine);
      if (later.length > 0) {
        out.push(
          `${taskId}: ack by ${worker} (attempt ${mine}) answered ok after attempt ${later.map(d => `${d.attempt} went to ${d.worker}`).join(", ")}`,
        );
      }
    }
    return out;
  }
  private stopWatch = false;
  private watching: Promise<void> = Promise.resolve();
  readonly started = Date.now();
  /** Set once the producers are done and the queue says nothing is left (ready, delayed, in flight). */
  private drained = false;

  constructor(
    readonly broker: ServiceBroker,
    readonly nodes: QueueNodeProcess[],
  ) {}

  get currentOwner(): string | undefined {
    return this.owners[this.owners.length - 1]?.node;
  }

  get finished(): boolean {
    return (this.producersDone && (this.acked.size >= this.added || this.drained)) || this.errors.length > 0;
  }

  /**
   * After the producers are done: the queue is drained when two stats in a row, a second apart, say
   * nothing is ready, delayed, in flight or handing over. Then any task not acked is lost, and it is
   * the queue's state that says so, however slow the machine was.
   */
  async watchDrain(): Promise<void> {
    let empty = 0;
    while (!this.finished) {
      await sleep(1000);
      if (!this.producersDone) continue;
      try {
        const s = await this.call<{ ready: number; delayed: number; inFlight: number; handingOver: number }>(
          "worker.queue.stats",
          { serviceId: this.serviceId },
          a => this.pick(a),
        );
        empty = s.ready + s.delayed + s.inFlight + s.handingOver === 0 ? empty + 1 : 0;
        if (empty >= 2) this.drained = true;
      } catch {
        empty = 0;
      }
    }
  }

  /** Polls queue_owner in the background, recording every change of node or range. */
  watchOwner(): void {
    this.watching = (async () => {
      while (!this.stopWatch) {
        try {
          const row = await readOwner(this.queue);
          const last = this.owners[this.owners.length - 1];
          if (row && (!last || last.node !== row.node || last.rangeId !== row.rangeId)) {
            this.owners.push(row);
            this.event(`queue_owner: ${row.node || "(released)"} range ${row.rangeId}`);
          }
        } catch {
          // the next poll will do
        }
        await sleep(100);
      }
    })();
  }

  async stopWatching(): Promise<void> {
    this.stopWatch = true;
    await this.watching;
  }

  /**
   * A running node for the i-th call: four calls in five go to a node that does not own the queue
   * (as far as queue_owner said at the last poll), so most calls are forwarded.
   */
  pick(i: number): string {
    const running = this.nodes.filter(n => n.running);
    if (running.length === 0) throw new Error("no running node");
    const others = running.filter(n => n.nodeID !== this.currentOwner);
    const from = i % 5 !== 0 && others.length > 0 ? others : running;
    return from[i % from.length]!.nodeID;
  }

  count(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  event(what: string): void {
    this.timeline.push(`+${Date.now() - this.started} ms ${what}`);
  }

  fail(what: string): void {
    if (this.errors.length === 0) this.event(`first error: ${what}`);
    this.errors.push(what);
  }

  /**
   * Calls `action` on the node `target(attempt)` chooses, retrying retryable errors (and request
   * timeouts / unavailable nodes) like a real client, for up to CALL_GIVE_UP_MS.
   */
  async call<T>(
    action: string,
    params: object,
    target: (attempt: number) => string,
    options: { timeout?: number; via?: { node: string } } = {},
  ): Promise<T> {
    const giveUp = Date.now() + CALL_GIVE_UP_MS;
    for (let attempt = 0; ; attempt++) {
      const nodeID = target(attempt);
      if (options.via) options.via.node = `${nodeID}(try ${attempt + 1})`;
      if (nodeID === this.currentOwner) this.callsToOwner++;
      else this.callsToOthers++;
      try {
        return await this.broker.call<T, object>(action, params, {
          nodeID,
          meta: { ownerId: OWNER_ID },
          timeout: options.timeout,
        });
      } catch (err) {
        if (!isRetryable(err) || Date.now() > giveUp) throw err;
        const e = err as { name?: string; type?: string };
        this.count(
          this.retriedErrors,
          `${action.split(".").pop()} ${e.type ?? `${e.name}(${(err as Error).message})`}`,
        );
        await sleep(attempt < 3 ? 10 : 50);
      }
    }
  }

  private nextTask = 0;

  /**
   * Producers add tasks `task-<n>` (client-chosen ids, so a retried add cannot enqueue twice) until
   * `upTo` are added, keeping the backlog (added, not acked) under BACKLOG so that adds go on all
   * run long, through the disruption.
   */
  async produce(upTo: number, producers = 8): Promise<void> {
    try {
      await Promise.all(
        Array.from({ length: producers }, async (_, p) => {
          let calls = 0;
          while (this.nextTask < upTo && this.errors.length === 0) {
            while (this.added - this.acked.size >= BACKLOG && this.errors.length === 0) {
              await sleep(10);
            }
            const n = this.nextTask++;
            const taskId = `task-${n}`;
            await this.call("worker.queue.add", { serviceId: this.serviceId, value: { n }, taskId }, a =>
              this.pick(p + calls++ + a),
            );
            this.history.add(taskId);
            this.added++;
          }
        }),
      );
    } catch (err) {
      this.fail(`producer: ${describe_(err)}`);
    }
  }

  /**
   * Fetch + ack with taskId, abandoning tasks whose n % 40 === 7 on their first attempt, and
   * re-fetching before the ack when n % 10 === 3 (G3: the same task and attempt while the lease runs).
   */
  async work(w: number): Promise<void> {
    const ttr = w % 2 === 0 ? 1 : 2;
    let generation = 0;
    let calls = 0;
    const late: Promise<void>[] = [];
    try {
      while (!this.finished) {
        const workerId = `w${w}-g${generation}`;
        const via = { node: "" };
        const task = await this.call<Fetched | null>(
          "worker.queue.fetchTask",
          { serviceId: this.serviceId, workerId, timeToRecover: ttr },
          a => this.pick(w + calls++ + a),
          { via },
        );
        if (!task) {
          await sleep(20);
          continue;
        }
        this.delivered(workerId, task, ttr, via.node);
        if (task.value.n % 40 === 7 && task.attempt === 1) {
          // This worker "crashes" holding the task: it comes back under a new identity, and its old
          // identity tries to ack once the lease has run out (it must not complete a newer delivery).
          this.abandoned++;
          generation++;
          late.push(this.lateAck(workerId, task, w));
          continue;
        }
        await sleep(task.value.n % 10); // the work
        let held = task;
        if (task.value.n % 10 === 3) {
          const again = await this.call<Fetched | null>(
            "worker.queue.fetchTask",
            { serviceId: this.serviceId, workerId, timeToRecover: ttr },
            a => this.pick(w + calls++ + a),
            { via },
          );
          const answeredAt = Date.now();
          this.refetches++;
          if (again) this.delivered(workerId, again, ttr, `${via.node} (re-fetch)`);
          if (!again || again.taskId !== task.taskId || again.attempt !== task.attempt) {
            // Fine if the lease may have run out before the owner saw the re-fetch (it can be held up
            // by a takeover); not if the answer came back while the lease was still running.
            const what = `${workerId} held ${task.taskId}#${task.attempt} until ${task.leaseUntil}, re-fetch answered at ${answeredAt}: ${again ? `${again.taskId}#${again.attempt}` : "null"}`;
            if (answeredAt < task.leaseUntil - 50) this.unstableFetches.push(what);
            else this.count(this.refetchAfterExpiry, again ? "another task or attempt" : "null");
          }
          if (!again) continue;
          held = again;
        }
        const res = await this.call<AckResult>(
          "worker.queue.ackTask",
          { serviceId: this.serviceId, workerId, taskId: held.taskId, result: held.value.n },
          a => this.pick(w + calls++ + a),
        );
        if (res.ok) {
          this.recordAck(held.taskId, workerId);
        } else {
          this.count(this.refusedAcks, res.reason ?? "?");
        }
      }
    } catch (err) {
      this.fail(`worker ${w}: ${describe_(err)}`);
    }
    await Promise.all(late);
  }

  private async lateAck(workerId: string, task: Fetched, w: number): Promise<void> {
    await sleep(task.leaseUntil + 300 - Date.now());
    try {
      const res = await this.call<AckResult>(
        "worker.queue.ackTask",
        { serviceId: this.serviceId, workerId, taskId: task.taskId, result: "late" },
        a => this.pick(w + a),
      );
      this.count(this.lateAcks, res.ok ? "ok" : (res.reason ?? "?"));
      if (res.ok) {
        this.recordAck(task.taskId, workerId);
      }
    } catch (err) {
      this.fail(`late ack ${workerId}: ${describe_(err)}`);
    }
  }

  summary(): string {
    const v = this.history.verdict();
    return JSON.stringify(
      {
        seconds: (Date.now() - this.started) / 1000,
        added: this.added,
        acked: this.acked.size,
        verdict: { ...v, lost: v.lost.slice(0, 20) },
        abandoned: this.abandoned,
        refetches: this.refetches,
        refetchAfterExpiry: Object.fromEntries(this.refetchAfterExpiry),
        unstableFetches: this.unstableFetches.slice(0, 10),
        ackedByNonHolder: this.ackedByNonHolder().slice(0, 10),
        lateAcks: Object.fromEntries(this.lateAcks),
        refusedAcks: Object.fromEntries(this.refusedAcks),
        retriedErrors: Object.fromEntries(this.retriedErrors),
        callsToOwner: this.callsToOwner,
        callsToOthers: this.callsToOthers,
        timeline: this.timeline,
        errors: this.errors.slice(0, 10),
      },
      null,
      1,
    );
  }

  /** Runs producers and workers; `disrupt` runs once a third of the tasks are acked. */
  async run(disrupt: () => Promise<void>): Promise<void> {
    this.watchOwner();
    // A backlog first, so that the owner holds ready tasks when it is disrupted.
    await this.produce(PREFILL);
    const producing = this.produce(TASKS).finally(() => (this.producersDone = true));
    const working = Promise.all(Array.from({ length: WORKERS }, (_, w) => this.work(w)));
    const drainWatch = this.watchDrain();
    let disruption: Promise<void> = Promise.resolve();
    try {
      await waitFor("a third of the tasks acked", () => this.acked.size >= TASKS / 3 || this.finished, 180_000);
      if (this.errors.length === 0) {
        disruption = disrupt().catch(err => {
          this.fail(`disruption: ${(err as Error).stack ?? String(err)}`);
        });
      }
    } catch (err) {
      this.fail(String(err));
    }
    await Promise.all([producing, working, disruption, drainWatch]);
    await this.stopWatching();
    if (this.errors.length > 0) {
      for (const n of this.nodes) process.stderr.write(`--- ${n.nodeID} (${n.state}) output:\n${n.output(60)}\n`);
    }
  }

  /** The checks every scenario ends with. */
  async expectClean(): Promise<void> {
    const v = this.history.verdict();
    const summary = this.summary();
    if (v.lost.length > 0 || this.errors.length > 0) process.stderr.write(`scenario summary: ${summary}\n`);
    const suspects = [
      ...v.lost.slice(0, 5),
      ...v.duplicatedWhileLeased.slice(0, 5),
      ...v.deliveredAfterAck.slice(0, 5),
      ...v.completedTwice.slice(0, 5),
      ...this.unstableFetches.slice(0, 3).flatMap(u => u.match(/task-\d+/g) ?? []),
      ...this.ackedByNonHolder()
        .slice(0, 3)
        .flatMap(u => u.match(/task-\d+/g) ?? []),
    ];
    if (v.lost.length > 0) {
      // Lost is what the drained queue says: print where it thinks each of them is.
      const statuses = await Promise.all(
        v.lost
          .slice(0, 10)
          .map(id =>
            this.call("worker.queue.status", { serviceId: this.serviceId, taskId: id }, x => this.pick(x)).catch(
              (err: unknown) => `status failed: ${describe_(err)}`,
            ),
          ),
      );
      process.stderr.write(`status of lost tasks:\n  ${statuses.map(x => JSON.stringify(x)).join("\n  ")}\n`);
    }
    if (suspects.length > 0) {
      const events = await taskEvents(this.queue, suspects).catch(err => [`(could not read the log: ${err})`]);
      process.stderr.write(`log events of ${suspects.join(", ")}:\n  ${events.join("\n  ")}\n`);
      process.stderr.write(
        `client-side deliveries:\n  ${suspects.map(id => `${id}: ${JSON.stringify(this.deliveriesOf(id))}`).join("\n  ")}\n`,
      );
    }
    expect({ errors: this.errors }).toEqual({ errors: [] });
    expect(this.added).toBe(TASKS);
    expect(v.tasks).toBe(TASKS);
    expect(v.lost).toEqual([]);
    expect(v.duplicatedWhileLeased).toEqual([]);
    expect(v.deliveredAfterAck).toEqual([]);
    expect(v.completedTwice).toEqual([]);
    expect(this.ackedByNonHolder()).toEqual([]);
    expect(this.unstableFetches).toEqual([]);
    expect(this.refetches).toBeGreaterThanOrEqual(100);
    expect(this.acked.size).toBe(TASKS);
    // Abandoned tasks came back to other workers.
    expect(this.abandoned).toBeGreaterThanOrEqual(20);
    expect(v.redeliveredAfterExpiry).toBeGreaterThanOrEqual(20);
    // Most calls reached a node that did not own the queue (and were forwarded).
    expect(this.callsToOthers).toBeGreaterThan(this.callsToOwner);
    // Nothing is left: a fresh worker gets nothing through any running node.
    for (const n of this.nodes.filter(x => x.running)) {
      const left = await this.call<Fetched | null>(
        "worker.queue.fetchTask",
        { serviceId: this.serviceId, workerId: `final-${n.nodeID}`, timeToRecover: 1 },
        () => n.nodeID,
      );
      expect(left).toBeNull();
    }
  }
}

test("(a) SIGKILL of the owner mid-run: another node takes over, nothing lost, nothing held twice", async () => {
  const { nodes, broker } = await startCluster("crash-a");
  const s = new Scenario(broker, nodes);
  const seen: { victim?: QueueNodeProcess; before?: OwnerRow; after?: OwnerRow } = {};
  await s.run(async () => {
    const before = await readOwner(s.queue);
    const victim = nodes.find(n => n.nodeID === before?.node);
    if (!before || !victim) throw new Error(`no owner found in queue_owner: ${JSON.stringify(before)}`);
    Object.assign(seen, { victim, before });
    s.event(`SIGKILL ${victim.nodeID}`);
    await victim.kill9();
    await waitFor(
      "another node takes the queue over",
      async () => {
        const row = await readOwner(s.queue);
        if (row && row.node !== "" && row.node !== victim.nodeID) seen.after = row;
        if (seen.after) s.event(`takeover seen: ${seen.after.node}`);
        return seen.after !== undefined;
      },
      20_000,
    );
  });
  process.stderr.write(`(a) ${s.summary()}\n`);
  expect(seen.victim?.state).toBe("killed");
  expect(seen.after).toBeDefined();
  expect(seen.after!.node).not.toBe(seen.victim!.nodeID);
  expect(seen.after!.rangeId).toBeGreaterThan(seen.before!.rangeId);
  await s.expectClean();
});

test("(b) SIGSTOP of the owner past its lease, takeover, SIGCONT: the stale owner hands out nothing and abandons the queue", async () => {
  const { nodes, broker } = await startCluster("crash-b");
  const s = new Scenario(broker, nodes);
  const attacks: string[] = [];
  const seen: { stale?: QueueNodeProcess; before?: OwnerRow; during?: OwnerRow } = {};
  const refetchMismatch: string[] = [];
  /** First attempt straight to the stale node; retries (as a real client's) through any running node. */
  const viaStale = (a: number) => (a === 0 ? seen.stale!.nodeID : s.pick(a));
  const opts = { timeout: 20_000 };

  const fetchVia = async (workerId: string, ttr: number): Promise<Fetched | null> => {
    const via = { node: "" };
    const t = await s.call<Fetched | null>(
      "worker.queue.fetchTask",
      { serviceId: s.serviceId, workerId, timeToRecover: ttr },
      viaStale,
      { ...opts, via },
    );
    if (t) s.delivered(workerId, t, ttr, via.node);
    attacks.push(`${workerId} fetch -> ${t ? `${t.taskId}#${t.attempt}` : "null"}`);
    return t;
  };
  const ackVia = async (workerId: string, taskId: string): Promise<void> => {
    const res = await s.call<AckResult>(
      "worker.queue.ackTask",
      { serviceId: s.serviceId, workerId, taskId, result: "attack" },
      viaStale,
      opts,
    );
    attacks.push(`${workerId} ack ${taskId} -> ${res.ok ? "ok" : res.reason}`);
    if (res.ok) {
      s.recordAck(taskId, workerId);
    }
  };
  /** A new worker: its fetch needs a new lease, which the stale owner cannot commit. */
  const fresh = async (workerId: string, ttr: number) => {
    const t = await fetchVia(workerId, ttr);
    if (t) await ackVia(workerId, t.taskId);
  };
  /** A worker holding a valid (carried) lease: re-fetch must give the same task (G3), then ack. */
  const refetch = async (workerId: string, ttr: number, held: Fetched) => {
    const t = await fetchVia(workerId, ttr);
    if (!t || t.taskId !== held.taskId || t.attempt !== held.attempt) {
      refetchMismatch.push(`${workerId}: held ${held.taskId}#${held.attempt}, re-fetch gave ${JSON.stringify(t)}`);
    }
    await ackVia(workerId, held.taskId);
  };

  await s.run(async () => {
    const before = await readOwner(s.queue);
    const stale = nodes.find(n => n.nodeID === before?.node);
    if (!before || !stale) throw new Error(`no owner found in queue_owner: ${JSON.stringify(before)}`);
    Object.assign(seen, { stale, before });
    // Leases granted by the owner just before it freezes: one long (it outlives the takeover and is
    // carried), two short (they run out while it is frozen and go to other workers).
    const held = new Map<string, Fetched>();
    for (const [id, ttr] of [
      ["atk-long", 30],
      ["atk-short-1", 1],
      ["atk-short-2", 1],
    ] as const) {
      const t = await s.call<Fetched | null>(
        "worker.queue.fetchTask",
        { serviceId: s.serviceId, workerId: id, timeToRecover: ttr },
        () => stale.nodeID,
      );
      if (t) {
        s.delivered(id, t, ttr, stale.nodeID);
        held.set(id, t);
      }
    }
    const pausedAt = Date.now();
    stale.pause();
    s.event(`SIGSTOP ${stale.nodeID} (holding ${[...held].map(([w, t]) => `${w}:${t.taskId}`).join(", ")})`);
    await waitFor(
      "another node takes the queue over while the owner is frozen",
      async () => {
        const row = await readOwner(s.queue);
        if (row && row.node !== "" && row.node !== stale.nodeID) seen.during = row;
        if (seen.during) s.event(`takeover seen: ${seen.during.node}`);
        return seen.during !== undefined;
      },
      20_000,
    );
    const pending: Promise<void>[] = [];
    // Wave 1: sent to the frozen node now; it answers them the moment it wakes, from stale memory.
    pending.push(fresh("atk-fresh-1", 2));
    if (held.has("atk-long")) pending.push(refetch("atk-long", 30, held.get("atk-long")!));
    if (held.has("atk-short-1")) pending.push(ackVia("atk-short-1", held.get("atk-short-1")!.taskId));
    // Frozen for 6 s at least, and until a while after the takeover (detection takes 3-6 s).
    await sleep(Math.max(pausedAt + 6_000, Date.now() + 1_000) - Date.now());
    stale.resume();
    s.event(`SIGCONT ${stale.nodeID}`);
    // Wave 2: right after it wakes.
    pending.push(fresh("atk-fresh-2", 2));
    if (held.has("atk-short-2")) pending.push(ackVia("atk-short-2", held.get("atk-short-2")!.taskId));
    pending.push(fresh("atk-fresh-3", 1));
    await Promise.all(pending);
    s.event("attacks answered");
    await waitFor(
      "the stale owner abandons the queue",
      () => stale.printed(new RegExp(`Queue ${s.queue} abandoned by ${stale.nodeID}`)),
      15_000,
    );
    s.event("stale owner abandoned the queue");
  });
  process.stderr.write(
    `(b) ${s.summary()}\nattacks: ${JSON.stringify(attacks, null, 1)}\nstale node ${seen.stale?.nodeID}:\n${seen.stale?.output(30)}\n`,
  );
  expect(seen.stale).toBeDefined();
  expect(seen.during).toBeDefined();
  expect(seen.during!.node).not.toBe(seen.stale!.nodeID);
  expect(seen.during!.rangeId).toBeGreaterThan(seen.before!.rangeId);
  expect(seen.stale!.output()).toMatch(new RegExp(`Queue ${s.queue} abandoned by ${seen.stale!.nodeID}`));
  expect(refetchMismatch).toEqual([]);
  await s.expectClean();
});
