/**
 * The HTTP API over a real socket, with the real queue service on the test Cassandra: an external
 * worker end to end, then every status the API answers with, token checks (another owner, another
 * service, expired, forged), body limits, and verification delegated to an action.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { SignJWT } from "jose";
import { Errors, type Context, type ServiceBroker, type ServiceSchema } from "moleculer";
import { HttpQueueWorker } from "../lib/worker/http-queue-worker";
import type { WorkerTask } from "../lib/worker/pull-worker";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { apiPort, newJwtSecret, request, tokenFor, type HttpAnswer } from "./helpers/http-api";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

let client: Client;
let broker: ServiceBroker;
const keyspace = uniqueKeyspace("http_api");
const secret = newJwtSecret();
const completed: { token: unknown; result?: unknown; error?: unknown }[] = [];
const stubCalls: { action: string; params: Record<string, unknown>; meta: Record<string, unknown> }[] = [];
let base: string;
let delegatedBase: string;
let stubBase: string;

/** Receives the results of tasks that carry a workflow token. */
const activityService: ServiceSchema = {
  name: "flow.activity",
  actions: {
    completed(ctx: Context<{ token: unknown; result?: unknown; error?: unknown }>) {
      completed.push(ctx.params);
      return true;
    },
  },
};

/** The delegated verifier: "good:<owner>:<services>", "expired", "down"; anything else is refused. */
const authService: ServiceSchema = {
  name: "auth",
  actions: {
    verify(ctx: Context<{ token: string }>) {
      const [kind, ownerId, services] = ctx.params.token.split(":");
      if (kind === "good") return { ownerId, services: services === "*" ? "*" : (services ?? "").split(",") };
      if (kind === "expired") throw new Errors.MoleculerClientError("expired", 401, "TOKEN_EXPIRED");
      if (kind === "down") throw new Errors.MoleculerRetryableError("database down", 503, "DB_DOWN");
      if (kind === "empty") return { services: "*" };
      throw new Errors.MoleculerClientError("unknown token", 401, "UNKNOWN_TOKEN", { token: ctx.params.token });
    },
  },
};

/** A stand-in queue with the job-control actions (update, release) and a fetchTask that accepts `wait`. */
const stubQueue: ServiceSchema = {
  name: "stub.queue",
  actions: {
    fetchTask: {
      params: {
        serviceId: "string",
        workerId: "string",
        timeToRecover: { type: "number", optional: true },
        wait: { type: "number", optional: true },
      },
      handler(ctx: Context<Record<string, unknown>, Record<string, unknown>>) {
        stubCalls.push({ action: "fetchTask", params: ctx.params, meta: { ...ctx.meta } });
        return null;
      },
    },
    /** As a queue of a version before `next`: acks only. */
    ackTask: {
      params: { serviceId: "string", workerId: "string", taskId: { type: "string", optional: true } },
      handler(ctx: Context<Record<string, unknown>, Record<string, unknown>>) {
        stubCalls.push({ action: "ackTask", params: ctx.params, meta: { ...ctx.meta } });
        return ctx.params.workerId === "gone" ? { ok: false, reason: "NO_TASK" } : { ok: true, taskId: "t-1" };
      },
    },
    update(ctx: Context<Record<string, unknown>, Record<string, unknown>>) {
      stubCalls.push({ action: "update", params: ctx.params, meta: { ...ctx.meta } });
      if (ctx.params.workerId === "gone") return { ok: false, reason: "NO_TASK" };
      if (ctx.params.workerId === "late") return { ok: false, reason: "LEASE_LOST", taskId: "t-9" };
      return { ok: true, cancelled: ctx.params.workerId === "cancel-me", leaseUntil: 1_700_000_000_000 };
    },
    release(ctx: Context<Record<string, unknown>, Record<string, unknown>>) {
      stubCalls.push({ action: "release", params: ctx.params, meta: { ...ctx.meta } });
      return ctx.params.workerId !== "gone";
    },
  },
};

beforeAll(async () => {
  client = await testClient();
  broker = await startQueueBroker("http-api", {
    keyspace,
    client,
    services: [
      activityService,
      authService,
      stubQueue,
      createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } }),
      createApiService({ name: "api-delegated", port: 0, ip: "127.0.0.1", authAction: "auth.verify" }),
      createApiService({ name: "api-stub", port: 0, ip: "127.0.0.1", jwt: { secret }, queueService: "stub.queue" }),
      createApiService({
        name: "api-cors",
        port: 0,
        ip: "127.0.0.1",
        jwt: { secret },
        corsOrigins: ["https://ops.example"],
      }),
    ],
  });
  base = `http://127.0.0.1:${apiPort(broker)}/api`;
  corsBase = `http://127.0.0.1:${apiPort(broker, "api-cors")}/api`;
  delegatedBase = `http://127.0.0.1:${apiPort(broker, "api-delegated")}/api`;
  stubBase = `http://127.0.0.1:${apiPort(broker, "api-stub")}/api`;
});

afterAll(async () => {
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

const route = (serviceId: string, op: string) => `${base}/queue/${serviceId}/${op}`;
let corsBase: string;

describe("browser safety", () => {
  test("every answer of the API says nosniff, no referrer and no framing, refusals too", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-h", [serviceId]);
    const answers = [
      await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } }),
      await request(route(serviceId, "fetch"), { body: { workerId: "w" } }), // 401
      await request(`${base.replace(/\/api$/, "")}/health`, { method: "GET" }),
      await request(`${base}/openapi.json`, { method: "GET" }),
    ];
    for (const a of answers) {
      expect(a.headers.get("x-content-type-options")).toBe("nosniff");
      expect(a.headers.get("referrer-policy")).toBe("no-referrer");
      expect(a.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
      expect(a.headers.get("x-frame-options")).toBe("DENY");
    }
    expect(answers.map(a => a.status)).toEqual([204, 401, 200, 200]);
  });

  test("CORS is off unless configured: no Access-Control headers, a preflight gets no permission", async () => {
    const serviceId = randomUUID();
    const pre = await request(route(serviceId, "fetch"), {
      method: "OPTIONS",
      headers: { origin: "https://ops.example", "access-control-request-method": "POST" },
    });
    expect(pre.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("with corsOrigins, a preflight from a listed origin is allowed without a token, others are not; calls still need one", async () => {
    const serviceId = randomUUID();
    const preflight = (origin: string) =>
      request(`${corsBase}/queue/${serviceId}/fetch`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      });
    const ok = await preflight("https://ops.example");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://ops.example");
    expect(ok.headers.get("access-control-allow-headers")).toMatch(/Authorization/);
    const other = await preflight("https://evil.example");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();

    const anonymous = await request(`${corsBase}/queue/${serviceId}/fetch`, {
      body: { workerId: "w" },
      headers: { origin: "https://ops.example" },
    });
    expect(anonymous.status).toBe(401);
    const token = await tokenFor(secret, "owner-h", [serviceId]);
    const call = await request(`${corsBase}/queue/${serviceId}/fetch`, {
      token,
      body: { workerId: "w" },
      headers: { origin: "https://ops.example" },
    });
    expect(call.status).toBe(204);
    expect(call.headers.get("access-control-allow-origin")).toBe("https://ops.example");
    expect(call.headers.get("access-control-expose-headers")).toMatch(/X-Task-Id/);
  });
});

/** Every error body is exactly `{ type, message, data }`. */
function expectError(answer: HttpAnswer, status: number, type: string): any {
  expect({ status: answer.status, type: answer.json?.type }).toEqual({ status, type });
  expect(Object.keys(answer.json).sort()).toEqual(["data", "message", "type"]);
  expect(answer.text).not.toMatch(/stack|at .+\.(ts|js):\d+/);
  return answer.json;
}

const fieldsOf = (answer: HttpAnswer): string[] => (answer.json.data as { field: string }[]).map(d => d.field);

describe("an external worker", () => {
  /** Runs an HttpQueueWorker on `serviceId` until `count` tasks have completed or failed. */
  async function work(
    serviceId: string,
    token: string,
    count: number,
    handler: (value: any, task: WorkerTask) => unknown,
  ): Promise<{ delivered: [string, number][]; completed: number; failed: number }> {
    const tally = { delivered: [] as [string, number][], completed: 0, failed: 0 };
    const worker = new HttpQueueWorker(
      { baseUrl: `http://127.0.0.1:${apiPort(broker)}`, token, serviceId, workerId: "example-worker", wait: 1 },
      handler,
    );
    worker.on("active", task => tally.delivered.push([task.id, task.attempt]));
    worker.on("completed", () => tally.completed++);
    worker.on("failed", () => tally.failed++);
    try {
      await waitFor(() => tally.completed + tally.failed >= count, 30_000);
    } finally {
      await worker.close();
    }
    return tally;
  }

  test("processes tasks end to end: HttpQueueWorker fetches, works and acks; results reach the workflow", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-e2e", [serviceId]);
    for (let n = 1; n <= 5; n++) {
      const added = await request(route(serviceId, "add"), {
        token,
        body: { value: { n }, token: { process: "p", n }, taskId: `e2e-${n}` },
      });
      expect({ status: added.status, body: added.json }).toEqual({ status: 200, body: { ok: true } });
    }
    const tally = await work(serviceId, token, 5, value => ({ doubled: (value as { n: number }).n * 2 }));
    expect(tally).toEqual({
      completed: 5,
      failed: 0,
      delivered: [1, 2, 3, 4, 5].map(n => [`e2e-${n}`, 1]),
    });
    await waitFor(() => completed.filter(c => (c.token as { process?: string }).process === "p").length === 5);
    const results = completed.filter(c => (c.token as { process?: string }).process === "p");
    expect(results.map(c => [(c.token as { n: number }).n, c.result]).sort()).toEqual(
      [1, 2, 3, 4, 5].map(n => [n, { doubled: n * 2 }]),
    );
    const empty = await request(route(serviceId, "fetch"), { token, body: { workerId: "example-worker" } });
    expect({ status: empty.status, text: empty.text }).toEqual({ status: 204, text: "" });
  });

  test("a handler that throws gives the task back with its error; after its attempts it is dead", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-e2e", [serviceId]);
    await request(route(serviceId, "add"), { token, body: { value: "boom", taskId: "boom", maxAttempts: 2 } });
    const tally = await work(serviceId, token, 2, () => {
      throw new Error("cannot do it");
    });
    expect(tally).toEqual({
      completed: 0,
      failed: 2,
      delivered: [
        ["boom", 1],
        ["boom", 2],
      ],
    });
    const dead = await broker.call("worker.queue.dead", { serviceId }, { meta: { ownerId: "owner-e2e" } });
    expect(dead).toEqual([
      expect.objectContaining({
        taskId: "boom",
        reason: "MAX_ATTEMPTS",
        error: { name: "Error", message: "cannot do it" },
      }),
    ]);
  });
});

describe("fetch and ack", () => {
  test("fetch answers 200 with the value and the task headers, the same task until acked; then 204", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    const taskId = "task é/1 ?";
    await request(route(serviceId, "add"), { token, body: { value: { hello: "world" }, taskId } });
    const before = Date.now();
    const first = await request(route(serviceId, "fetch"), { token, body: { workerId: "w1", timeToRecover: 30 } });
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ hello: "world" });
    expect(first.headers.get("content-type")).toMatch(/^application\/json/);
    expect(decodeURIComponent(first.headers.get("x-task-id")!)).toBe(taskId);
    expect(first.headers.get("x-task-attempt")).toBe("1");
    const leaseUntil = Number(first.headers.get("x-lease-until"));
    expect(leaseUntil).toBeGreaterThanOrEqual(before + 29_000);
    expect(leaseUntil).toBeLessThanOrEqual(Date.now() + 31_000);

    const again = await request(route(serviceId, "fetch"), { token, body: { workerId: "w1" } });
    expect(again.headers.get("x-task-id")).toBe(first.headers.get("x-task-id"));
    expect(again.json).toEqual({ hello: "world" });

    const other = await request(route(serviceId, "fetch"), { token, body: { workerId: "w2" } });
    expect(other.status).toBe(204);

    const ack = await request(route(serviceId, "ack"), { token, body: { workerId: "w1", taskId, result: 1 } });
    expect({ status: ack.status, body: ack.json }).toEqual({ status: 200, body: { ok: true } });
    const after = await request(route(serviceId, "fetch"), { token, body: { workerId: "w1" } });
    expect(after.status).toBe(204);
  });

  test("a string value is a JSON string body", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    await request(route(serviceId, "add"), { token, body: { value: "plain text" } });
    const fetched = await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } });
    expect(fetched.text).toBe('"plain text"');
  });

  test("ack by a worker holding nothing is 409 NO_TASK", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    const ack = await request(route(serviceId, "ack"), { token, body: { workerId: "idle" } });
    expect(expectError(ack, 409, "NO_TASK").data).toEqual({ serviceId, workerId: "idle" });
  });

  test("ack after the lease went to another worker is 409 LEASE_LOST and does not complete it", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    await request(route(serviceId, "add"), { token, body: { value: "slow", taskId: "slow-1" } });
    const first = await request(route(serviceId, "fetch"), { token, body: { workerId: "w1", timeToRecover: 0.3 } });
    expect(first.headers.get("x-task-attempt")).toBe("1");
    await new Promise(r => setTimeout(r, 400));
    const second = await request(route(serviceId, "fetch"), { token, body: { workerId: "w2" } });
    expect(second.headers.get("x-task-attempt")).toBe("2");
    const late = await request(route(serviceId, "ack"), { token, body: { workerId: "w1", result: "late" } });
    expect(expectError(late, 409, "LEASE_LOST").data).toEqual({ serviceId, workerId: "w1", taskId: "slow-1" });
    const ack = await request(route(serviceId, "ack"), { token, body: { workerId: "w2" } });
    expect(ack.status).toBe(200);
  });

  test("ack?next=1 acks and answers the next task as fetch does, the ack's outcome in X-Ack", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    for (const n of [1, 2]) await request(route(serviceId, "add"), { token, body: { value: { n }, taskId: `n-${n}` } });
    await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } });
    const before = Date.now();
    const chained = await request(`${route(serviceId, "ack")}?next=1`, {
      token,
      body: { workerId: "w", taskId: "n-1", result: "one", timeToRecover: 30 },
    });
    expect(chained.status).toBe(200);
    expect(chained.json).toEqual({ n: 2 });
    expect(chained.headers.get("x-ack")).toBe("ok");
    expect(chained.headers.get("x-task-id")).toBe("n-2");
    expect(chained.headers.get("x-task-attempt")).toBe("1");
    expect(Number(chained.headers.get("x-lease-until"))).toBeGreaterThanOrEqual(before + 29_000);
    // The worker holds n-2 now; the last ack brings nothing: 204, still with X-Ack.
    const again = await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } });
    expect(again.headers.get("x-task-id")).toBe("n-2");
    const last = await request(`${route(serviceId, "ack")}?next=true`, {
      token,
      body: { workerId: "w", taskId: "n-2" },
    });
    expect({ status: last.status, ack: last.headers.get("x-ack"), text: last.text }).toEqual({
      status: 204,
      ack: "ok",
      text: "",
    });
    // A refused ack is no 409 here: X-Ack says why, and the worker still gets what is ready.
    await request(route(serviceId, "add"), { token, body: { value: "three", taskId: "n-3" } });
    const refused = await request(`${route(serviceId, "ack")}?next=1`, {
      token,
      body: { workerId: "w", taskId: "n-9" },
    });
    expect({ status: refused.status, ack: refused.headers.get("x-ack"), body: refused.json }).toEqual({
      status: 200,
      ack: "NO_TASK",
      body: "three",
    });
    const bad = await request(`${route(serviceId, "ack")}?next=maybe`, {
      token,
      body: { workerId: "w", taskId: "n-3" },
    });
    expect(expectError(bad, 422, "VALIDATION_ERROR").data).toEqual([expect.objectContaining({ field: "next" })]);
    // Checked before the ack: a next without the task id, or a bad lease, acks nothing.
    for (const [body, field] of [
      [{ workerId: "w" }, "taskId"],
      [{ workerId: "w", taskId: "n-3", timeToRecover: "abc" }, "timeToRecover"],
    ] as const) {
      const refusedBody = await request(`${route(serviceId, "ack")}?next=1`, { token, body });
      expect(expectError(refusedBody, 422, "VALIDATION_ERROR").data).toEqual([expect.objectContaining({ field })]);
    }
    expect(
      (await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } })).headers.get("x-task-id"),
    ).toBe("n-3");
  });

  test("ack?next=1&wait= long-polls the next task after the ack; a bad wait acks nothing", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    await request(route(serviceId, "add"), { token, body: { value: "first", taskId: "p-1" } });
    await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } });
    const bad = await request(`${route(serviceId, "ack")}?next=1&wait=soon`, {
      token,
      body: { workerId: "w", taskId: "p-1" },
    });
    expect(expectError(bad, 422, "VALIDATION_ERROR").data).toEqual([expect.objectContaining({ field: "wait" })]);
    const held = await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } });
    expect(held.headers.get("x-task-id")).toBe("p-1");
    // Nothing else is waiting: the ack completes p-1, then the answer waits for the next task.
    // Woken by the add: a poll that waited its 10 s out would answer 204.
    const chained = request(`${route(serviceId, "ack")}?next=1&wait=10`, {
      token,
      body: { workerId: "w", taskId: "p-1", result: "done" },
    });
    await new Promise(r => setTimeout(r, 300));
    await request(route(serviceId, "add"), { token, body: { value: "second", taskId: "p-2" } });
    const answer = await chained;
    expect({
      status: answer.status,
      ack: answer.headers.get("x-ack"),
      task: answer.headers.get("x-task-id"),
      body: answer.json,
    }).toEqual({ status: 200, ack: "ok", task: "p-2", body: "second" });
  });

  test("?wait long-polls: a task added while the worker waits is delivered at once; none is 204 after the wait", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-f", [serviceId]);
    const t0 = Date.now();
    const empty = await request(`${route(serviceId, "fetch")}?wait=0.5`, { token, body: { workerId: "w" } });
    expect(empty.status).toBe(204);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);

    // Woken by the add: a poll that waited its 10 s out would answer 204.
    const waiting = request(`${route(serviceId, "fetch")}?wait=10`, { token, body: { workerId: "w" } });
    await new Promise(r => setTimeout(r, 300));
    await request(route(serviceId, "add"), { token, body: { value: "arrived" } });
    const answer = await waiting;
    expect({ status: answer.status, body: answer.json }).toEqual({ status: 200, body: "arrived" });
  });
});

describe("job control on the queue", () => {
  test("update extends the lease and release gives the task back for another attempt", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-j", [serviceId]);
    await request(route(serviceId, "add"), { token, body: { value: "job", taskId: "job-1" } });
    const fetched = await request(route(serviceId, "fetch"), { token, body: { workerId: "w1", timeToRecover: 5 } });
    const leaseUntil = Number(fetched.headers.get("x-lease-until"));
    const update = await request(route(serviceId, "update"), {
      token,
      body: { workerId: "w1", taskId: "job-1", progress: { pct: 10 } },
    });
    expect(update.status).toBe(200);
    expect(update.json).toMatchObject({ ok: true, cancelled: false });
    expect(update.json.leaseUntil).toBeGreaterThanOrEqual(leaseUntil);

    const release = await request(route(serviceId, "release"), { token, body: { workerId: "w1", taskId: "job-1" } });
    expect({ status: release.status, body: release.json }).toEqual({ status: 200, body: { ok: true } });
    const again = await request(route(serviceId, "fetch"), { token, body: { workerId: "w2" } });
    expect([again.status, again.json, again.headers.get("x-task-attempt")]).toEqual([200, "job", "2"]);

    expectError(await request(route(serviceId, "update"), { token, body: { workerId: "w1" } }), 409, "NO_TASK");
    expectError(await request(route(serviceId, "release"), { token, body: { workerId: "w1" } }), 409, "NO_TASK");
  });
});

describe("authentication and authorization", () => {
  const serviceId = randomUUID();
  const body = { workerId: "w" };

  test("no Authorization header is 401 AUTH_REQUIRED with a Bearer challenge", async () => {
    const answer = await request(route(serviceId, "fetch"), { body });
    expectError(answer, 401, "AUTH_REQUIRED");
    expect(answer.headers.get("www-authenticate")).toBe("Bearer");
  });

  test("a malformed, forged or incomplete token is 401 INVALID_TOKEN and never echoed", async () => {
    const valid = await tokenFor(secret, "owner-a", [serviceId]);
    const forged = await tokenFor(newJwtSecret(), "owner-a", [serviceId]);
    const [header, payload] = valid.split(".");
    const unsigned = `${header}.${payload}.`;
    const algNone = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${payload}.`;
    const key = new TextEncoder().encode(secret);
    const noExp = await new SignJWT({ services: "*" }).setProtectedHeader({ alg: "HS256" }).setSubject("o").sign(key);
    const noServices = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("o")
      .setExpirationTime("1h")
      .sign(key);
    const noSub = await new SignJWT({ services: "*" })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("1h")
      .sign(key);
    for (const [token, reason] of [
      ["not-a-jwt", "malformed token"],
      [forged, "bad signature"],
      [unsigned, "bad signature"],
      [algNone, "algorithm not allowed"],
      [noExp, "claim exp missing"],
      [noServices, 'claim services must be "*" or an array of serviceIds'],
      [noSub, "claim sub missing"],
    ] as const) {
      const answer = await request(route(serviceId, "fetch"), { token, body });
      expect(expectError(answer, 401, "INVALID_TOKEN").data).toEqual({ reason });
      expect(answer.headers.get("www-authenticate")).toBe('Bearer error="invalid_token"');
      expect(answer.text).not.toContain(token);
      expect(answer.text).not.toContain(secret);
    }
    const basic = await request(route(serviceId, "fetch"), { headers: { authorization: "Basic dTpw" }, body });
    expectError(basic, 401, "INVALID_TOKEN");
  });

  test("an expired token is 401 TOKEN_EXPIRED", async () => {
    const expired = await tokenFor(secret, "owner-a", [serviceId], -60);
    const answer = await request(route(serviceId, "fetch"), { token: expired, body });
    expectError(answer, 401, "TOKEN_EXPIRED");
  });

  test("a token for another service is 403 SERVICE_NOT_ALLOWED; a token for all services passes", async () => {
    const other = await tokenFor(secret, "owner-a", [randomUUID()]);
    for (const op of ["fetch", "ack", "add", "update", "release"]) {
      const answer = await request(route(serviceId, op), { token: other, body: { ...body, value: 1 } });
      expect(expectError(answer, 403, "SERVICE_NOT_ALLOWED").data).toEqual({ serviceId });
    }
    const all = await tokenFor(secret, "owner-a", "*");
    expect((await request(route(serviceId, "fetch"), { token: all, body })).status).toBe(204);
  });

  test("a request naming another owner than its token's is 403 OWNER_NOT_ALLOWED", async () => {
    const token = await tokenFor(secret, "owner-a", [serviceId]);
    const byHeader = await request(route(serviceId, "fetch"), { token, body, headers: { "x-owner-id": "owner-b" } });
    expectError(byHeader, 403, "OWNER_NOT_ALLOWED");
    const byBody = await request(route(serviceId, "add"), { token, body: { value: 1, ownerId: "owner-b" } });
    expectError(byBody, 403, "OWNER_NOT_ALLOWED");
    const same = await request(route(serviceId, "fetch"), { token, body, headers: { "x-owner-id": "owner-a" } });
    expect(same.status).toBe(204);
  });

  test("a token of another owner reaches none of this owner's tasks, even for the same serviceId", async () => {
    const shared = randomUUID();
    const ownerA = await tokenFor(secret, "owner-a", [shared]);
    const ownerB = await tokenFor(secret, "owner-b", [shared]);
    await request(route(shared, "add"), { token: ownerA, body: { value: "a's secret" } });
    expect((await request(route(shared, "fetch"), { token: ownerB, body })).status).toBe(204);
    expectError(await request(route(shared, "ack"), { token: ownerB, body }), 409, "NO_TASK");
    const mine = await request(route(shared, "fetch"), { token: ownerA, body });
    expect(mine.json).toBe("a's secret");
  });
});

describe("request bodies", () => {
  const serviceId = randomUUID();
  let token: string;
  beforeAll(async () => {
    token = await tokenFor(secret, "owner-b", "*");
  });

  test("malformed JSON is 400 MALFORMED_JSON, without quoting the body", async () => {
    const answer = await request(route(serviceId, "fetch"), { token, body: '{"workerId": "w", secret-ish' });
    expectError(answer, 400, "MALFORMED_JSON");
    expect(answer.text).not.toContain("secret-ish");
  });

  test("a body over the limit (1 MiB by default) is 413 BODY_TOO_LARGE", async () => {
    const big = JSON.stringify({ value: "x".repeat(1024 * 1024) });
    const answer = await request(route(serviceId, "add"), { token, body: big });
    expect(expectError(answer, 413, "BODY_TOO_LARGE").data).toEqual({ limit: 1024 * 1024 });
    // The gateway still answers on the same connection pool afterwards.
    expect((await request(route(serviceId, "fetch"), { token, body: { workerId: "w" } })).status).toBe(204);
  });

  test("a value or result nested 10,000 levels deep is 422 VALIDATION_ERROR naming the field; the node keeps serving", async () => {
    const sid = randomUUID();
    const deepToken = await tokenFor(secret, "owner-f", [sid]);
    const nested = (open: string, close: string) => open.repeat(10_000) + "1" + close.repeat(10_000);
    for (const value of [nested("[", "]"), nested('{"a":', "}")]) {
      const add = await request(route(sid, "add"), { token: deepToken, body: `{"value":${value}}` });
      expect(expectError(add, 422, "VALIDATION_ERROR").data).toMatchObject({ field: "value" });
    }
    await request(route(sid, "add"), { token: deepToken, body: { value: "ok" } });
    expect((await request(route(sid, "fetch"), { token: deepToken, body: { workerId: "w" } })).json).toBe("ok");
    const ack = await request(route(sid, "ack"), {
      token: deepToken,
      body: `{"workerId":"w","result":${nested("[", "]")}}`,
    });
    expect(expectError(ack, 422, "VALIDATION_ERROR").data).toMatchObject({ field: "result" });
    expect((await request(route(sid, "ack"), { token: deepToken, body: { workerId: "w" } })).status).toBe(200);
  });

  test("an unauthenticated request is refused before its body is read", async () => {
    const answer = await request(route(serviceId, "add"), { body: "{ not json" });
    expectError(answer, 401, "AUTH_REQUIRED");
  });

  test("invalid fields are 422 VALIDATION_ERROR naming each field", async () => {
    const cases: [string, string, unknown, string][] = [
      [serviceId, "fetch", {}, "workerId"],
      [serviceId, "fetch", { workerId: "w", timeToRecover: -1 }, "timeToRecover"],
      ["not-a-uuid", "fetch", { workerId: "w" }, "serviceId"],
      [serviceId, "add", { taskId: "t" }, "value"],
      [serviceId, "add", { value: 1, token: "not an object" }, "token"],
      [serviceId, "ack", { workerId: "" }, "workerId"],
      [serviceId, "fetch", [{ workerId: "w" }], "body"],
      [serviceId, "fetch", "42", "body"],
    ];
    for (const [sid, op, body, field] of cases) {
      const answer = await request(route(sid, op), { token, body });
      expectError(answer, 422, "VALIDATION_ERROR");
      expect(fieldsOf(answer)).toContain(field);
    }
  });

  test("?wait outside 0-20 seconds is 422 naming wait", async () => {
    for (const wait of ["21", "-1", "soon", "1e3"]) {
      const answer = await request(`${route(serviceId, "fetch")}?wait=${wait}`, { token, body: { workerId: "w" } });
      expectError(answer, 422, "VALIDATION_ERROR");
      expect(fieldsOf(answer)).toEqual(["wait"]);
    }
  });
});

describe("routes", () => {
  test("unknown routes and methods are 404 NOT_FOUND as JSON", async () => {
    const token = await tokenFor(secret, "owner-c", "*");
    for (const [method, path] of [
      ["POST", `/queue/${randomUUID()}/nothing`],
      ["GET", `/queue/${randomUUID()}/fetch`],
      ["GET", "/elsewhere"],
      ["POST", "/v1/worker.queue/fetch"],
    ]) {
      expectError(await request(`${base}${path}`, { method, token }), 404, "NOT_FOUND");
    }
  });

  test("GET /api/openapi.json describes every route without a token", async () => {
    const answer = await request(`${base}/openapi.json`, { method: "GET" });
    expect(answer.status).toBe(200);
    expect(answer.json.openapi).toMatch(/^3\./);
    expect(Object.keys(answer.json.paths).sort()).toEqual(
      [
        "/api/openapi.json",
        "/api/queues",
        ...["ack", "add", "fetch", "release", "update"].map(op => `/api/queue/{serviceId}/${op}`),
        // The operator console's routes.
        ...["stats", "tasks", "tasks/{taskId}", "dead", "redrive", "cancel", "purge"].map(
          op => `/api/queue/{serviceId}/${op}`,
        ),
      ].sort(),
    );
    const fetchOp = answer.json.paths["/api/queue/{serviceId}/fetch"].post;
    expect(Object.keys(fetchOp.responses)).toEqual(expect.arrayContaining(["200", "204", "401", "403", "422"]));
    // Every header fetch sends (X-Task-Cancelled too, since ack?next=1 shares the list).
    expect(Object.keys(fetchOp.responses["200"].headers)).toEqual([
      "X-Task-Id",
      "X-Task-Attempt",
      "X-Lease-Until",
      "X-Task-Cancelled",
    ]);
    const ackOp = answer.json.paths["/api/queue/{serviceId}/ack"].post;
    expect(Object.keys(ackOp.responses["200"].headers)).toEqual([
      "X-Ack",
      ...Object.keys(fetchOp.responses["200"].headers),
    ]);
    expect(answer.json.components.securitySchemes.bearerAuth.scheme).toBe("bearer");
  });
});

describe("job control and long-poll (stand-in queue service)", () => {
  test("update and release reach the queue as the token's owner; a worker holding nothing is 409", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-s", [serviceId]);
    const update = await request(`${stubBase}/queue/${serviceId}/update`, {
      token,
      body: { workerId: "cancel-me", progress: { pct: 50 }, ownerId: "owner-s", extra: "dropped" },
    });
    expect({ status: update.status, body: update.json }).toEqual({
      status: 200,
      body: { ok: true, cancelled: true, leaseUntil: 1_700_000_000_000 },
    });
    const call = stubCalls.find(c => c.action === "update")!;
    expect(call.params).toEqual({ serviceId, workerId: "cancel-me", progress: { pct: 50 } });
    expect(call.meta).toMatchObject({ ownerId: "owner-s", acl: { ownerId: "owner-s" } });

    const release = await request(`${stubBase}/queue/${serviceId}/release`, {
      token,
      body: { workerId: "w", delay: 5, error: { reason: "busy" } },
    });
    expect({ status: release.status, body: release.json }).toEqual({ status: 200, body: { ok: true } });
    expect(stubCalls.find(c => c.action === "release")!.params).toEqual({
      serviceId,
      workerId: "w",
      delay: 5,
      error: { reason: "busy" },
    });
    for (const op of ["update", "release"]) {
      const gone = await request(`${stubBase}/queue/${serviceId}/${op}`, { token, body: { workerId: "gone" } });
      expectError(gone, 409, "NO_TASK");
    }
    const late = await request(`${stubBase}/queue/${serviceId}/update`, { token, body: { workerId: "late" } });
    expect(expectError(late, 409, "LEASE_LOST").data).toEqual({ serviceId, workerId: "late", taskId: "t-9" });
  });

  test("?wait is passed to a fetchTask that declares it, and not otherwise", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-s", [serviceId]);
    const answer = await request(`${stubBase}/queue/${serviceId}/fetch?wait=2.5`, {
      token,
      body: { workerId: "w", timeToRecover: 10 },
    });
    expect(answer.status).toBe(204);
    const call = stubCalls.filter(c => c.action === "fetchTask").at(-1)!;
    expect(call.params).toEqual({ serviceId, workerId: "w", timeToRecover: 10, wait: 2.5 });
    expect(call.meta).toMatchObject({ ownerId: "owner-s", acl: { ownerId: "owner-s" } });

    await request(`${stubBase}/queue/${serviceId}/fetch`, { token, body: { workerId: "w" } });
    expect(stubCalls.filter(c => c.action === "fetchTask").at(-1)!.params).not.toHaveProperty("wait");
  });

  test("ack?next=1 against a queue without next: the gateway acks, then fetches", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-s", [serviceId]);
    stubCalls.length = 0;
    const answer = await request(`${stubBase}/queue/${serviceId}/ack?next=1`, {
      token,
      body: { workerId: "w", taskId: "t-1", timeToRecover: 5 },
    });
    expect({ status: answer.status, ack: answer.headers.get("x-ack") }).toEqual({ status: 204, ack: "ok" });
    expect(stubCalls.map(c => [c.action, c.params])).toEqual([
      ["ackTask", { serviceId, workerId: "w", taskId: "t-1" }],
      ["fetchTask", { serviceId, workerId: "w", timeToRecover: 5 }],
    ]);
  });

  test("a queue action no node offers is 503 QUEUE_UNAVAILABLE with Retry-After", async () => {
    const serviceId = randomUUID();
    const token = await tokenFor(secret, "owner-s", [serviceId]);
    const answer = await request(`${stubBase}/queue/${serviceId}/add`, { token, body: { value: 1 } });
    expect(expectError(answer, 503, "QUEUE_UNAVAILABLE").data).toEqual({ action: "stub.queue.add" });
    expect(answer.headers.get("retry-after")).toBe("1");
  });
});

describe("verification delegated to an action", () => {
  const droute = (serviceId: string, op: string) => `${delegatedBase}/queue/${serviceId}/${op}`;

  test("the action's owner and services govern the call", async () => {
    const serviceId = randomUUID();
    const added = await request(droute(serviceId, "add"), { token: `good:owner-d:${serviceId}`, body: { value: 7 } });
    expect(added.status).toBe(200);
    const other = await request(droute(serviceId, "fetch"), { token: "good:owner-e:*", body: { workerId: "w" } });
    expect(other.status).toBe(204);
    const mine = await request(droute(serviceId, "fetch"), { token: "good:owner-d:*", body: { workerId: "w" } });
    expect({ status: mine.status, body: mine.json }).toEqual({ status: 200, body: 7 });
    // The same task through the JWT gateway: one queue, whichever way the owner was verified.
    const jwt = await tokenFor(secret, "owner-d", [serviceId]);
    expect((await request(route(serviceId, "ack"), { token: jwt, body: { workerId: "w" } })).status).toBe(200);

    const denied = await request(droute(serviceId, "fetch"), {
      token: `good:owner-d:${randomUUID()}`,
      body: { workerId: "w" },
    });
    expectError(denied, 403, "SERVICE_NOT_ALLOWED");
  });

  test("a refused token is 401, an expired one 401 TOKEN_EXPIRED, an unavailable verifier 503", async () => {
    const serviceId = randomUUID();
    const body = { workerId: "w" };
    const refused = await request(droute(serviceId, "fetch"), { token: "forged-token-value", body });
    expect(expectError(refused, 401, "INVALID_TOKEN").data).toEqual({
      reason: "refused by the verifier (UNKNOWN_TOKEN)",
    });
    expect(refused.text).not.toContain("forged-token-value");
    expectError(await request(droute(serviceId, "fetch"), { token: "expired", body }), 401, "TOKEN_EXPIRED");
    expectError(await request(droute(serviceId, "fetch"), { token: "empty", body }), 401, "INVALID_TOKEN");
    const down = await request(droute(serviceId, "fetch"), { token: "down", body });
    expect(expectError(down, 503, "AUTH_UNAVAILABLE").data).toEqual({ action: "auth.verify", reason: "DB_DOWN" });
    expect(down.headers.get("retry-after")).toBe("1");
    expectError(await request(droute(serviceId, "fetch"), { body }), 401, "AUTH_REQUIRED");
  });
});

test("GET /health answers without a token: Cassandra up, how many queues this node serves", async () => {
  const health = await request(base.replace(/\/api$/, "/health"), { method: "GET" });
  expect(health.status).toBe(200);
  expect(health.json).toMatchObject({ cassandra: true, nodeId: broker.nodeID });
  expect(typeof (health.json as { ownedQueues: unknown }).ownedQueues).toBe("number");
});
