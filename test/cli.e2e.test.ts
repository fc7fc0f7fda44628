/**
 * queuectl end to end: the command line in its own process (lib/cli/main.ts) against a gateway
 * over a real socket, with the queue on the test Cassandra. Each command's table and --json.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { apiPort, newJwtSecret } from "./helpers/http-api";
import { owner, startQueueBroker } from "./helpers/queue-cluster";

const run = promisify(execFile);
const MAIN = join(__dirname, "..", "lib", "cli", "main.ts");
const keyspace = uniqueKeyspace("cli_e2e");
const secret = newJwtSecret();
const opts = owner("owner-cli");
let client: Client;
let broker: ServiceBroker;
let url: string;

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("cli", {
    keyspace,
    client,
    services: [createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } })],
  });
  url = `http://127.0.0.1:${apiPort(broker)}`;
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

/** Runs queuectl; never throws: the exit code, stdout and stderr. */
async function queuectl(args: string[], env: Record<string, string> = {}) {
  const loader = pathToFileURL(require.resolve("tsx")).href;
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", loader, MAIN, ...args], {
      env: { ...process.env, QUEUE_API_URL: url, API_JWT_SECRET: secret, ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

test("token, add, queues, stats, tasks, dead, redrive and purge, as tables and as JSON", async () => {
  const serviceId = randomUUID();
  const minted = await queuectl(["token", "--owner", "owner-cli", "--service", "*", "--ttl", "600"]);
  expect(minted.code).toBe(0);
  const token = minted.stdout.trim();
  expect(token.split(".")).toHaveLength(3);
  const as = { QUEUE_API_TOKEN: token };

  for (const n of [1, 2, 3]) {
    const added = await queuectl(["add", serviceId, JSON.stringify({ n }), "--task-id", `t${n}`], as);
    expect(added).toMatchObject({ code: 0, stdout: "added\n" });
  }
  // One task dead after its only attempt, one held by a worker.
  await broker.call("worker.queue.add", { serviceId, value: { n: 4 }, taskId: "doomed", maxAttempts: 1 }, opts);
  const held = (await broker.call("worker.queue.fetchTask", { serviceId, workerId: "w1" }, opts)) as { taskId: string };
  expect(held.taskId).toBe("t1");
  await broker.call("worker.queue.ack", { serviceId, workerId: "w1" }, opts);
  await broker.call("worker.queue.fetchTask", { serviceId, workerId: "w1" }, opts); // t2
  await broker.call("worker.queue.fetchTask", { serviceId, workerId: "w2" }, opts); // t3
  await broker.call("worker.queue.ack", { serviceId, workerId: "w2" }, opts);
  const doomed = (await broker.call("worker.queue.fetchTask", { serviceId, workerId: "w3" }, opts)) as {
    taskId: string;
  };
  expect(doomed.taskId).toBe("doomed");
  await broker.call("worker.queue.release", { serviceId, workerId: "w3", error: { message: "boom" } }, opts);

  const queues = await queuectl(["queues"], as);
  expect(queues.code).toBe(0);
  const lines = queues.stdout.trim().split("\n");
  expect(lines[0]).toMatch(/^QUEUE\s+READY\s+DELAYED\s+IN FLIGHT\s+DEAD/);
  const row = lines.find(l => l.startsWith(serviceId))!;
  expect(row.split(/\s+/).slice(0, 5)).toEqual([serviceId, "0", "0", "1", "1"]);
  const queuesJson = JSON.parse((await queuectl(["queues", "--json"], as)).stdout);
  expect(queuesJson.queues.find((q: { serviceId: string }) => q.serviceId === serviceId).stats).toMatchObject({
    ready: 0,
    inFlight: 1,
    dead: 1,
  });

  const stats = await queuectl(["stats", serviceId], as);
  expect(stats.code).toBe(0);
  expect(stats.stdout).toMatch(/in flight\s+1/);
  expect(stats.stdout).toMatch(/w1\s+t2\s+1/);

  const tasks = JSON.parse((await queuectl(["tasks", serviceId, "--state", "leased", "--json"], as)).stdout);
  expect(tasks).toMatchObject({ total: 1, tasks: [{ taskId: "t2", state: "leased", worker: "w1" }] });
  const tasksTable = await queuectl(["tasks", serviceId], as);
  expect(tasksTable.stdout).toMatch(/^TASK\s+STATE/);
  expect(tasksTable.stdout).toMatch(/t2\s+leased\s+1\s+w1/);

  const dead = await queuectl(["dead", serviceId], as);
  expect(dead.stdout).toMatch(/doomed\s+1\s+MAX_ATTEMPTS\s+.*boom/);
  expect(JSON.parse((await queuectl(["redrive", serviceId, "--json"], as)).stdout)).toEqual({ redriven: 1 });
  expect((await queuectl(["dead", serviceId], as)).stdout.trim()).toBe("(none)");

  // Purge asks for --yes; with it the waiting task (the redriven one) goes, the leased one stays.
  const refused = await queuectl(["purge", serviceId], as);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toContain("--yes");
  const purged = await queuectl(["purge", serviceId, "--yes"], as);
  expect(purged).toMatchObject({ code: 0, stdout: "1 task(s) purged\n" });
  expect(await broker.call("worker.queue.status", { serviceId, taskId: "t2" }, opts)).toMatchObject({
    state: "leased",
  });
}, 180_000);

test("refusals: no token, a token for another queue, a bad value, an unknown command", async () => {
  const serviceId = randomUUID();
  const none = await queuectl(["stats", serviceId]);
  expect(none.code).toBe(2);
  expect(none.stderr).toContain("a token is required");

  const other = (await queuectl(["token", "--owner", "owner-cli", "--service", randomUUID()])).stdout.trim();
  const denied = await queuectl(["stats", serviceId], { QUEUE_API_TOKEN: other });
  expect(denied.code).toBe(1);
  expect(denied.stderr).toMatch(/^SERVICE_NOT_ALLOWED \(403\)/);

  const token = (await queuectl(["token", "--owner", "owner-cli", "--service", "*"])).stdout.trim();
  const bad = await queuectl(["add", serviceId, "{not json"], { QUEUE_API_TOKEN: token });
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("not JSON");
  const unknown = await queuectl(["frobnicate"], { QUEUE_API_TOKEN: token });
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain("unknown command");
  const down = await queuectl(["queues", "--url", "http://127.0.0.1:9"], { QUEUE_API_TOKEN: token });
  expect(down.code).toBe(1);
  expect(down.stderr).toContain("did not answer");
}, 120_000);
