/**
 * The console's HTTP routes over a real socket, with the real queue service on the test Cassandra:
 * what each answers, that the token's owner and services claim bound them (another owner's queues
 * stay invisible and untouchable), that a purge needs its confirmation, and how the gateway serves
 * the console's files (no token, safe headers, nothing outside the folder).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { apiPort, newJwtSecret, request, tokenFor, type HttpAnswer } from "./helpers/http-api";
import { startQueueBroker } from "./helpers/queue-cluster";

const keyspace = uniqueKeyspace("http_console");
const secret = newJwtSecret();
const ownerA = "owner-a";
const ownerB = "owner-b";
const q1 = randomUUID();
const q2 = randomUUID();
/** A console build stand-in, so that this file does not need `npm run build:console`. */
const consoleFolder = mkdtempSync(join(tmpdir(), "console-assets-"));
const emptyFolder = mkdtempSync(join(tmpdir(), "console-none-"));

let client: Client;
let broker: ServiceBroker;
let base: string;
let origin: string;
let unbuiltOrigin: string;
let tokenA: string;
let tokenB: string;

const meta = (ownerId: string) => ({ meta: { ownerId } });
const call = <T = any>(action: string, params: object, ownerId = ownerA): Promise<T> =>
  broker.call(`worker.queue.${action}`, params, meta(ownerId)) as Promise<T>;
const get = (path: string, token?: string, headers?: Record<string, string>) =>
  request(`${base}${path}`, { method: "GET", token, headers });
const post = (path: string, token: string | undefined, body?: unknown) => request(`${base}${path}`, { token, body });

function expectError(answer: HttpAnswer, status: number, type: string): any {
  expect({ status: answer.status, type: answer.json?.type }).toEqual({ status, type });
  expect(Object.keys(answer.json).sort()).toEqual(["data", "message", "type"]);
  return answer.json;
}

const fieldsOf = (answer: HttpAnswer): string[] => (answer.json.data as { field: string }[]).map(d => d.field);

/** A raw request: the path goes out exactly as written (fetch would normalise `..`). */
function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method: "GET" }, res => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", chunk => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

let deadTaskId: string;
let waitingTaskId: string;

beforeAll(async () => {
  writeFileSync(join(consoleFolder, "index.html"), "<!doctype html><title>console</title>");
  mkdirSync(join(consoleFolder, "assets"));
  writeFileSync(join(consoleFolder, "assets", "index-AbCdEf12.js"), "export {};\n");
  client = await testClient();
  broker = await startQueueBroker("http-console", {
    keyspace,
    client,
    services: [
      createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret }, consoleFolder }),
      createApiService({ name: "api-unbuilt", port: 0, ip: "127.0.0.1", jwt: { secret }, consoleFolder: emptyFolder }),
    ],
  });
  origin = `http://127.0.0.1:${apiPort(broker)}`;
  base = `${origin}/api`;
  unbuiltOrigin = `http://127.0.0.1:${apiPort(broker, "api-unbuilt")}`;
  tokenA = await tokenFor(secret, ownerA, "*");
  tokenB = await tokenFor(secret, ownerB, "*");

  // ownerA: q1 holds a dead task, a waiting task with a value, one more waiting; q2 holds one task.
  await call("add", { serviceId: q1, value: { n: "dead" }, maxAttempts: 1 });
  const dying = await call("fetchTask", { serviceId: q1, workerId: "w1" });
  await call("release", { serviceId: q1, workerId: "w1", taskId: dying.taskId, error: { code: "E_BROKEN" } });
  deadTaskId = dying.taskId;
  await call("add", { serviceId: q1, value: { n: "secret-a" }, taskId: `wait-${randomUUID()}` });
  await call("add", { serviceId: q1, value: { n: 2 } });
  await call("add", { serviceId: q2, value: { n: 3 } });
  const page = await call<{ tasks: { taskId: string; state: string }[] }>("tasks", { serviceId: q1, state: "waiting" });
  waitingTaskId = page.tasks[0]!.taskId;
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
  rmSync(consoleFolder, { recursive: true, force: true });
  rmSync(emptyFolder, { recursive: true, force: true });
});

describe("GET /api/queues", () => {
  test("lists the token owner's queues with their stats", async () => {
    const answer = await get("/queues", tokenA);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("cache-control")).toBe("no-store");
    const byId = new Map((answer.json.queues as any[]).map(q => [q.serviceId, q]));
    expect([...byId.keys()].sort()).toEqual([q1, q2].sort());
    expect(byId.get(q1).stats).toMatchObject({ ready: 2, delayed: 0, inFlight: 0, dead: 1 });
    expect(byId.get(q1).stats.completedPer10s).toHaveLength(30);
    expect(byId.get(q1).stats).toEqual(
      await call("stats", { serviceId: q1 }).then(s => ({ ...s, oldestWaitingMs: expect.any(Number) })),
    );
    expect(typeof byId.get(q1).seenAt).toBe("number");
  });

  test("another owner sees none of them; a token for some queues sees only those", async () => {
    expect((await get("/queues", tokenB)).json).toEqual({ queues: [] });
    const narrow = await get("/queues", await tokenFor(secret, ownerA, [q2, randomUUID()]));
    expect((narrow.json.queues as any[]).map(q => q.serviceId)).toEqual([q2]);
    expect(narrow.json.queues[0].stats).toMatchObject({ ready: 1 });
  });

  test("needs a valid token", async () => {
    expectError(await get("/queues"), 401, "AUTH_REQUIRED");
    expectError(await get("/queues", "forged.token.here"), 401, "INVALID_TOKEN");
    expectError(await get("/queues", await tokenFor(secret, ownerA, "*", -60)), 401, "TOKEN_EXPIRED");
    expectError(await get("/queues", tokenA, { "x-owner-id": ownerB }), 403, "OWNER_NOT_ALLOWED");
  });
});

describe("one queue", () => {
  test("GET stats answers the queue's stats; uncovered or malformed queues are refused", async () => {
    const answer = await get(`/queue/${q1}/stats`, tokenA);
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ ready: 2, dead: 1, workers: [], handingOver: 0 });
    const narrow = await tokenFor(secret, ownerA, [q2]);
    expect(expectError(await get(`/queue/${q1}/stats`, narrow), 403, "SERVICE_NOT_ALLOWED").data).toEqual({
      serviceId: q1,
    });
    expectError(await get(`/queue/${q1}/stats`), 401, "AUTH_REQUIRED");
    const bad = await get("/queue/not-a-uuid/stats", tokenA);
    expectError(bad, 422, "VALIDATION_ERROR");
    expect(fieldsOf(bad)).toEqual(["serviceId"]);
  });

  test("GET tasks pages through the live tasks, optionally of one state", async () => {
    const all = await get(`/queue/${q1}/tasks`, tokenA);
    expect(all.status).toBe(200);
    expect(all.json.total).toBe(3);
    // By state (in flight, waiting, delayed, dead), oldest first within each.
    expect((all.json.tasks as any[]).map(t => t.state)).toEqual(["waiting", "waiting", "dead"]);
    expect(all.json.tasks[0]).not.toHaveProperty("value");

    const page = await get(`/queue/${q1}/tasks?state=waiting&offset=1&limit=1`, tokenA);
    expect(page.json.total).toBe(2);
    expect(page.json.tasks).toHaveLength(1);
    expect(page.json.tasks[0].state).toBe("waiting");

    for (const [query, field] of [
      ["state=finished", "state"],
      ["limit=0", "limit"],
      ["limit=5000", "limit"],
      ["offset=-1", "offset"],
    ]) {
      const answer = await get(`/queue/${q1}/tasks?${query}`, tokenA);
      expectError(answer, 422, "VALIDATION_ERROR");
      expect(fieldsOf(answer)).toEqual([field]);
    }
  });

  test("GET tasks/:taskId shows the task with its value and last error to its owner only", async () => {
    const waiting = await get(`/queue/${q1}/tasks/${encodeURIComponent(waitingTaskId)}`, tokenA);
    expect(waiting.status).toBe(200);
    expect(waiting.json).toMatchObject({ taskId: waitingTaskId, state: "waiting", value: { n: "secret-a" } });
    const dead = await get(`/queue/${q1}/tasks/${deadTaskId}`, tokenA);
    expect(dead.json).toMatchObject({ state: "dead", attempt: 1, reason: "MAX_ATTEMPTS", error: { code: "E_BROKEN" } });

    expectError(await get(`/queue/${q1}/tasks/no-such-task`, tokenA), 404, "TASK_NOT_FOUND");
    // Another owner's queue of the same serviceId is another queue: the task is not there.
    const other = expectError(
      await get(`/queue/${q1}/tasks/${encodeURIComponent(waitingTaskId)}`, tokenB),
      404,
      "TASK_NOT_FOUND",
    );
    expect(JSON.stringify(other)).not.toContain("secret-a");
  });

  test("GET dead lists the dead-letter tasks with their last error", async () => {
    const answer = await get(`/queue/${q1}/dead`, tokenA);
    expect(answer.status).toBe(200);
    expect(answer.json.tasks).toEqual([
      expect.objectContaining({ taskId: deadTaskId, attempt: 1, reason: "MAX_ATTEMPTS", error: { code: "E_BROKEN" } }),
    ]);
    expect((await get(`/queue/${q1}/dead`, tokenB)).json).toEqual({ tasks: [] });
    expectError(await get(`/queue/${q1}/dead?limit=0`, tokenA), 422, "VALIDATION_ERROR");
  });
});

describe("actions", () => {
  test("POST redrive puts the named dead tasks (or all) back; another owner redrives nothing of them", async () => {
    expect((await post(`/queue/${q1}/redrive`, tokenB, {})).json).toEqual({ redriven: 0 });
    expect((await post(`/queue/${q1}/redrive`, tokenA, { taskIds: ["not-dead"] })).json).toEqual({ redriven: 0 });
    const answer = await post(`/queue/${q1}/redrive`, tokenA, { taskIds: [deadTaskId] });
    expect({ status: answer.status, body: answer.json }).toEqual({ status: 200, body: { redriven: 1 } });
    expect((await call("status", { serviceId: q1, taskId: deadTaskId })).state).toBe("waiting");
    expect((await post(`/queue/${q1}/redrive`, tokenA)).json).toEqual({ redriven: 0 }); // no body: all (none left)
    const bad = await post(`/queue/${q1}/redrive`, tokenA, { taskIds: "all" });
    expectError(bad, 422, "VALIDATION_ERROR");
    expect(fieldsOf(bad)).toEqual(["taskIds"]);
    expectError(await post(`/queue/${q1}/redrive`, tokenA, "{not json"), 400, "MALFORMED_JSON");
  });

  test("POST cancel cancels the owner's task; another owner's cancel does not reach it", async () => {
    const other = await post(`/queue/${q1}/cancel`, tokenB, { taskId: waitingTaskId });
    expect(other.json).toEqual({ ok: false, state: "unknown", taskId: waitingTaskId });
    expect((await call("status", { serviceId: q1, taskId: waitingTaskId })).state).toBe("waiting");

    const answer = await post(`/queue/${q1}/cancel`, tokenA, { taskId: waitingTaskId });
    expect({ status: answer.status, body: answer.json }).toEqual({
      status: 200,
      body: { ok: true, state: "cancelled", taskId: waitingTaskId },
    });
    const missing = await post(`/queue/${q1}/cancel`, tokenA, {});
    expectError(missing, 422, "VALIDATION_ERROR");
    expect(fieldsOf(missing)).toEqual(["taskId"]);
    expectError(
      await post(`/queue/${q1}/cancel`, await tokenFor(secret, ownerA, [q2]), { taskId: "x" }),
      403,
      "SERVICE_NOT_ALLOWED",
    );
  });

  test("POST purge needs confirm = the serviceId; it purges the token owner's queue only", async () => {
    const before = await call("stats", { serviceId: q1 });
    expect(before.ready).toBe(2);
    for (const body of [undefined, {}, { confirm: q2 }, { confirm: q1.toUpperCase() }, { confirm: [q1] }]) {
      const refused = await post(`/queue/${q1}/purge`, tokenA, body);
      expectError(refused, 422, "VALIDATION_ERROR");
      expect(fieldsOf(refused)).toEqual(["confirm"]);
    }
    expect((await call("stats", { serviceId: q1 })).ready).toBe(2);

    expect((await post(`/queue/${q1}/purge`, tokenB, { confirm: q1 })).json).toEqual({ purged: 0 });
    expect((await call("stats", { serviceId: q1 })).ready).toBe(2);
    expectError(
      await post(`/queue/${q1}/purge`, await tokenFor(secret, ownerA, [q2]), { confirm: q1 }),
      403,
      "SERVICE_NOT_ALLOWED",
    );

    const answer = await post(`/queue/${q1}/purge`, tokenA, { confirm: q1 });
    expect({ status: answer.status, body: answer.json }).toEqual({ status: 200, body: { purged: 2 } });
    expect((await call("stats", { serviceId: q1 })).ready).toBe(0);
    expect((await call("stats", { serviceId: q2 })).ready).toBe(1);
  });

  test("the worker routes are unchanged and the new ones answer 404 for other methods", async () => {
    expectError(await post(`/queue/${q1}/stats`, tokenA, {}), 404, "NOT_FOUND");
    expectError(await request(`${base}/queue/${q1}/purge`, { method: "GET", token: tokenA }), 404, "NOT_FOUND");
    expectError(await post("/queues", tokenA, {}), 404, "NOT_FOUND");
    const added = await post(`/queue/${q2}/add`, tokenA, { value: { n: 4 } });
    expect(added.json).toEqual({ ok: true });
  });
});

test("GET /api/openapi.json documents the console routes", async () => {
  const doc = (await request(`${base}/openapi.json`, { method: "GET" })).json;
  expect(doc.paths["/api/queues"].get.operationId).toBe("listQueues");
  expect(Object.keys(doc.paths["/api/queue/{serviceId}/tasks/{taskId}"].get.responses)).toContain("404");
  expect(doc.paths["/api/queue/{serviceId}/purge"].post.requestBody.content["application/json"].schema).toEqual({
    $ref: "#/components/schemas/PurgeRequest",
  });
  expect(doc.components.schemas.PurgeRequest.required).toEqual(["confirm"]);
});

describe("the console's files", () => {
  test("are served without a token, with a strict Content-Security-Policy", async () => {
    const redirect = await fetch(`${origin}/console?x=1`, { redirect: "manual" });
    expect({ status: redirect.status, location: redirect.headers.get("location") }).toEqual({
      status: 301,
      location: "/console/?x=1",
    });
    const page = await fetch(`${origin}/console/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<title>console</title>");
    expect(page.headers.get("cache-control")).toBe("no-cache");
    expect(page.headers.get("content-security-policy")).toMatch(
      /default-src 'none'.*script-src 'self'.*connect-src 'self'/,
    );
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const asset = await fetch(`${origin}/console/assets/index-AbCdEf12.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("content-type")).toMatch(/javascript/);
    expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
  });

  test("nothing else is: missing files, other methods, other prefixes and paths out of the folder are 404", async () => {
    expectError(await request(`${origin}/console/missing.js`, { method: "GET" }), 404, "NOT_FOUND");
    expectError(await request(`${origin}/console/`, { method: "POST", body: {} }), 404, "NOT_FOUND");
    expectError(await request(`${origin}/consoles/index.html`, { method: "GET" }), 404, "NOT_FOUND");
    for (const path of ["/console/../package.json", "/console/%2e%2e/package.json", "/console/..%2fpackage.json"]) {
      const answer = await rawGet(origin, path);
      expect(answer.status).not.toBe(200);
      expect(answer.body).not.toContain('"name"');
    }
  });

  test("a gateway without a built console says so", async () => {
    const answer = await request(`${unbuiltOrigin}/console/`, { method: "GET" });
    expect(expectError(answer, 503, "CONSOLE_NOT_BUILT").message).toContain("npm run build:console");
  });
});
