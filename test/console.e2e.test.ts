/**
 * The operator console end to end: Debian's headless Chromium (playwright-core) on the page the
 * gateway serves at /console, against a broker with the real queue service on the test Cassandra.
 * An operator signs in with a token, reads the overview (checked against `stats`), redrives a dead
 * task, cancels a running one (its worker learns it), purges with the typed confirmation; another
 * owner sees nothing of it; 100 queues render in under a second without reading tasks from
 * Cassandra. Every page is watched for console errors. Screenshots go to docs/.
 *
 * The console is built first when dist-console/ is missing or stale (`vite build console`, 1-2 s here).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Client } from "cassandra-driver";
import type { ServiceBroker } from "moleculer";
import type { Page } from "playwright-core";
import { createApiService } from "../services/api.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { ensureConsoleBuilt, launchChromium, watchConsole, type ConsoleBrowser } from "./helpers/console";
import { apiPort, newJwtSecret, request, tokenFor } from "./helpers/http-api";
import { startQueueBroker, waitFor } from "./helpers/queue-cluster";

/** The page's document, inside page.evaluate callbacks (the tests are compiled without the DOM library). */
declare const document: {
  querySelector(selector: string): any;
  querySelectorAll(selector: string): { length: number };
};

jest.setTimeout(120_000);

const keyspace = uniqueKeyspace("console_e2e");
const secret = newJwtSecret();
const DOCS = join(__dirname, "..", "docs");
const run = randomUUID().slice(0, 8);
const ownerA = `acme-${run}`;
const ownerB = `globex-${run}`;
const ownerC = `initech-${run}`;
const q1 = randomUUID();
const q2 = randomUUID();

let client: Client;
let broker: ServiceBroker;
let browser: ConsoleBrowser;
let origin: string;
let tokenA: string;
/** Console problems of the pages a test opened; each test ends by expecting none. */
let watched: { page: Page; problems: string[] }[] = [];

const meta = (ownerId: string) => ({ meta: { ownerId } });
const call = <T = any>(action: string, params: object, ownerId = ownerA): Promise<T> =>
  broker.call(`worker.queue.${action}`, params, meta(ownerId)) as Promise<T>;

beforeAll(async () => {
  const buildMs = await ensureConsoleBuilt();
  if (buildMs > 0) console.log(`built the console in ${Math.round(buildMs)} ms`);
  client = await testClient();
  broker = await startQueueBroker("console-e2e", {
    keyspace,
    client,
    services: [createApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } })],
  });
  origin = `http://127.0.0.1:${apiPort(broker)}`;
  tokenA = await tokenFor(secret, ownerA, "*");
  browser = await launchChromium();
  mkdirSync(DOCS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await broker?.stop();
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

afterEach(async () => {
  const pages = watched;
  watched = [];
  for (const w of pages) if (!w.page.isClosed()) await w.page.close();
});

/** A new tab, watched for console errors. */
async function newPage(): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.context.newPage();
  const w = { page, problems: watchConsole(page) };
  watched.push(w);
  return w;
}

/** A new tab signed in with `token` the way a person does it: paste, click. */
async function signIn(token: string, hash = "#/"): Promise<{ page: Page; problems: string[] }> {
  const w = await newPage();
  await w.page.goto(`${origin}/console/${hash}`);
  await w.page.getByTestId("token").fill(token);
  await w.page.getByTestId("sign-in").click();
  await w.page.getByTestId("who").waitFor();
  return w;
}

/** The numbers of one overview row. */
async function rowCounts(page: Page, serviceId: string): Promise<Record<string, number> | undefined> {
  return page.evaluate(id => {
    const row = document.querySelector(`tr[data-service-id="${id}"]`);
    if (!row) return undefined;
    const out: Record<string, number> = {};
    for (const key of ["ready", "delayed", "inFlight", "dead"]) {
      out[key] = Number(row.querySelector(`[data-stat="${key}"]`)?.textContent?.replace(/,/g, ""));
    }
    out.completed = Number(row.querySelector("svg.throughput")?.getAttribute("data-total"));
    return out;
  }, serviceId);
}

const pick = (s: any) => ({
  ready: s.ready,
  delayed: s.delayed,
  inFlight: s.inFlight,
  dead: s.dead,
  completed: (s.completedPer10s as number[]).reduce((a, b) => a + b, 0),
});

// Tasks of the mixed workload on q1, named for what happens to them.
let deadTaskId: string;
let runningTaskId: string;

test("the gateway serves the console without a token; its data needs one", async () => {
  const redirect = await fetch(`${origin}/console`, { redirect: "manual" });
  expect({ status: redirect.status, location: redirect.headers.get("location") }).toEqual({
    status: 301,
    location: "/console/",
  });
  const page = await fetch(`${origin}/console/`);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toMatch(/^text\/html/);
  expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
  const html = await page.text();
  const script = /src="\.\/(assets\/[^"]+\.js)"/.exec(html)?.[1];
  expect(script).toBeDefined();
  const asset = await fetch(`${origin}/console/${script}`);
  expect(asset.status).toBe(200);
  expect(asset.headers.get("cache-control")).toContain("immutable");
  expect((await request(`${origin}/api/queues`, { method: "GET" })).status).toBe(401);
});

test("sign in with a pasted token; the overview's counts equal the queue's stats after a mixed workload", async () => {
  // q1: one dead task, one completed, one running, three ready, two delayed. q2: five completed, three ready.
  await call("add", { serviceId: q1, value: { job: "flaky" }, maxAttempts: 1, taskId: `dead-${run}` });
  const dying = await call("fetchTask", { serviceId: q1, workerId: "w-dead" });
  await call("release", { serviceId: q1, workerId: "w-dead", taskId: dying.taskId, error: { message: "disk full" } });
  deadTaskId = dying.taskId;
  await call("add", { serviceId: q1, value: { job: "done" } });
  const done = await call("fetchTask", { serviceId: q1, workerId: "w-done" });
  await call("ackTask", { serviceId: q1, workerId: "w-done", taskId: done.taskId, result: { ok: 1 } });
  await call("add", { serviceId: q1, value: { job: "long", input: "report-2024.csv" } });
  const running = await call("fetchTask", { serviceId: q1, workerId: "w-long", timeToRecover: 600 });
  runningTaskId = running.taskId;
  await call("update", { serviceId: q1, workerId: "w-long", taskId: runningTaskId, progress: { pct: 40 } });
  for (let i = 0; i < 3; i++) await call("add", { serviceId: q1, value: { job: "ready", i } });
  for (let i = 0; i < 2; i++) await call("add", { serviceId: q1, value: { job: "later", i }, delay: 3600 });
  for (let i = 0; i < 5; i++) {
    await call("add", { serviceId: q2, value: { job: "quick", i } });
    const quick = await call("fetchTask", { serviceId: q2, workerId: "w-quick" });
    await call("ackTask", { serviceId: q2, workerId: "w-quick", taskId: quick.taskId });
  }
  for (let i = 0; i < 3; i++) await call("add", { serviceId: q2, value: { job: "other", i } });

  const expected = {
    [q1]: pick(await call("stats", { serviceId: q1 })),
    [q2]: pick(await call("stats", { serviceId: q2 })),
  };
  expect(expected[q1]).toEqual({ ready: 3, delayed: 2, inFlight: 1, dead: 1, completed: 1 });
  expect(expected[q2]).toEqual({ ready: 3, delayed: 0, inFlight: 0, dead: 0, completed: 5 });

  const { page, problems } = await signIn(tokenA);
  expect(await page.evaluate(() => sessionStorage.getItem("queue-console.token"))).toBe(tokenA);
  await waitFor(async () => (await page.locator("tr[data-queue-row]").count()) === 2, 15_000);
  for (const serviceId of [q1, q2]) {
    await waitFor(
      async () => JSON.stringify(await rowCounts(page, serviceId)) === JSON.stringify(expected[serviceId]),
      15_000,
    ).catch(async () => expect(await rowCounts(page, serviceId)).toEqual(expected[serviceId]));
  }
  // The oldest waiting age is shown (a duration, as the queue's stats give it).
  expect(await page.locator(`tr[data-service-id="${q1}"] [data-stat="oldestWaiting"]`).textContent()).toMatch(
    /^\d+ (ms|s|min)/,
  );
  // It polls: a new task shows up without a reload.
  await call("add", { serviceId: q2, value: { job: "other", i: 3 } });
  await waitFor(async () => (await rowCounts(page, q2))?.ready === 4, 10_000);
  await page.screenshot({ path: join(DOCS, "console-overview.png") });
  expect(problems).toEqual([]);
});

test("a dead task is redriven from the page and is then ready", async () => {
  const { page, problems } = await signIn(tokenA, `#/queue/${q1}?state=dead&task=${encodeURIComponent(deadTaskId)}`);
  const row = page.locator(`tr[data-task-id="${deadTaskId}"]`);
  await row.waitFor();
  // Its details: dead, with the last error.
  const panel = page.getByTestId("task-panel");
  await expect(panel.getByTestId("task-error").textContent()).resolves.toContain("disk full");
  expect(await panel.getByTestId("state").textContent()).toBe("dead");
  expect(await panel.getByTestId("task-value").textContent()).toContain("flaky");
  await page.screenshot({ path: join(DOCS, "console-queue.png") });

  await row.getByRole("checkbox").check();
  await page.getByTestId("redrive-selected").click();
  await expect(page.getByTestId("notice").textContent()).resolves.toContain("Redrove 1 task");
  const status = await call("status", { serviceId: q1, taskId: deadTaskId });
  expect(status.state).toBe("waiting");
  expect((await call("stats", { serviceId: q1 })).dead).toBe(0);
  // The page follows: the dead tab empties, the counter drops.
  await page.getByTestId("no-tasks").waitFor();
  await waitFor(
    async () => (await page.locator('[data-testid="queue-stats"] [data-stat="dead"]').textContent()) === "0",
  );
  expect(problems).toEqual([]);
});

test("a cancel from the page reaches the worker holding the task", async () => {
  const { page, problems } = await signIn(tokenA, `#/queue/${q1}?state=leased`);
  await page.locator(`tr[data-task-id="${runningTaskId}"] [data-testid="open-task"]`).click();
  const panel = page.getByTestId("task-panel");
  await expect(panel.getByTestId("task-progress").textContent()).resolves.toContain('"pct": 40');
  expect(await panel.locator('[data-fact="Worker"]').textContent()).toBe("w-long");
  await panel.getByTestId("cancel-task").click();
  await panel.getByTestId("cancel-confirm").click();
  await expect(page.getByTestId("notice").textContent()).resolves.toContain("Cancel requested");

  const update = await call("update", { serviceId: q1, workerId: "w-long", taskId: runningTaskId });
  expect(update).toMatchObject({ ok: true, taskId: runningTaskId, cancelled: true });
  const again = await call("fetchTask", { serviceId: q1, workerId: "w-long" });
  expect(again).toMatchObject({ taskId: runningTaskId, cancelled: true });
  await waitFor(async () => ((await panel.getByTestId("state").textContent()) ?? "").includes("cancel requested"));
  expect(problems).toEqual([]);
});

test("purge needs the queue id typed as confirmation", async () => {
  const ready = (await call("stats", { serviceId: q2 })).ready;
  expect(ready).toBe(4);
  const { page, problems } = await signIn(tokenA, `#/queue/${q2}`);
  await page.getByTestId("purge-open").click();
  const submit = page.getByTestId("purge-submit");
  expect(await submit.isDisabled()).toBe(true);
  await page.getByTestId("purge-confirm").fill(q1); // another queue's id
  expect(await submit.isDisabled()).toBe(true);
  await page.getByTestId("purge-confirm").press("Enter"); // submitting anyway does nothing
  expect((await call("stats", { serviceId: q2 })).ready).toBe(4);
  await page.getByTestId("purge-confirm").fill(q2);
  expect(await submit.isDisabled()).toBe(false);
  await submit.click();
  await expect(page.getByTestId("notice").textContent()).resolves.toContain("Purged 4 tasks");
  expect((await call("stats", { serviceId: q2 })).ready).toBe(0);
  await waitFor(
    async () => (await page.locator('[data-testid="queue-stats"] [data-stat="ready"]').textContent()) === "0",
  );
  // Another queue's page does not inherit the notice.
  await page.goto(`${origin}/console/#/queue/${q1}`);
  await page.locator("#queue-title", { hasText: q1 }).waitFor();
  await page.locator('[data-testid="queue-stats"]').waitFor();
  expect(await page.getByTestId("notice").count()).toBe(0);
  expect(problems).toEqual([]);
});

test("a long worker id wraps inside its table, an empty chart says so, and Reason stays in view with a task open", async () => {
  const q3 = randomUUID();
  const longWorker = `worker-${"x".repeat(200)}`;
  await call("add", { serviceId: q3, value: { job: "held" } });
  await call("fetchTask", { serviceId: q3, workerId: longWorker, timeToRecover: 600 });
  await call("add", { serviceId: q3, value: { job: "dies" }, maxAttempts: 1, taskId: "dies" });
  await call("fetchTask", { serviceId: q3, workerId: "w-dies" });
  await call("release", { serviceId: q3, workerId: "w-dies", error: { message: "x".repeat(300) } });
  const { page, problems } = await signIn(tokenA, `#/queue/${q3}`);
  await page.getByTestId("chart-empty").waitFor();
  expect(await page.getByTestId("chart-empty").textContent()).toContain("No completions");

  await page.locator("details.workers summary").click();
  const overflow = await page.getByTestId("workers-table").evaluate(t => {
    const box = t.parentElement!.getBoundingClientRect();
    return t.getBoundingClientRect().right - box.right;
  });
  expect(overflow).toBeLessThanOrEqual(1);

  await page.goto(`${origin}/console/#/queue/${q3}?state=dead&task=dies`);
  await page.getByTestId("task-panel").waitFor();
  const reason = page.getByTestId("task-reason").first();
  await reason.waitFor();
  const cut = await reason.evaluate(cell => {
    const scroller = cell.closest(".tasks")!.getBoundingClientRect();
    return cell.getBoundingClientRect().right - scroller.right;
  });
  expect(cut).toBeLessThanOrEqual(1);
  expect(problems).toEqual([]);
});

test("a second owner's token sees none of the first owner's queues", async () => {
  const tokenB = await tokenFor(secret, ownerB, "*");
  const { page, problems } = await signIn(tokenB);
  await page.getByTestId("no-queues").waitFor();
  expect(await page.locator("tr[data-queue-row]").count()).toBe(0);
  // The same serviceId is another queue for this owner: empty.
  await page.goto(`${origin}/console/#/queue/${q1}`);
  await page.getByTestId("no-tasks").waitFor();
  const counters = page.locator('[data-testid="queue-stats"] dd');
  await counters.first().waitFor();
  for (const key of ["ready", "delayed", "inFlight", "dead"]) {
    expect(await page.locator(`[data-testid="queue-stats"] [data-stat="${key}"]`).textContent()).toBe("0");
  }
  expect(problems).toEqual([]);
});

test("failures show the API's error type and message", async () => {
  // A refused token (the browser itself logs the 401 of the request; nothing else may be logged).
  const bad = await newPage();
  await bad.page.goto(`${origin}/console/`);
  await bad.page.getByTestId("token").fill("not-a-jwt");
  await bad.page.getByTestId("sign-in").click();
  const error = bad.page.getByTestId("error");
  await expect(error.textContent()).resolves.toContain("INVALID_TOKEN");
  expect(await error.textContent()).toContain("The bearer token is not valid (malformed token)");

  // A token for q1 only: the overview lists q1; q2's page says why it shows nothing.
  const narrow = await signIn(await tokenFor(secret, ownerA, [q1]));
  await narrow.page.locator(`tr[data-service-id="${q1}"]`).waitFor();
  expect(await narrow.page.locator("tr[data-queue-row]").count()).toBe(1);
  await narrow.page.goto(`${origin}/console/#/queue/${q2}`);
  await expect(narrow.page.getByTestId("error").first().textContent()).resolves.toContain("SERVICE_NOT_ALLOWED");

  const browserNetworkLog = /^console\.error: Failed to load resource: the server responded with a status of (401|403)/;
  for (const w of [bad, narrow]) {
    expect(w.problems.filter(p => !browserNetworkLog.test(p))).toEqual([]);
  }
  expect(bad.problems.length).toBeGreaterThan(0); // the 401 was seen, so the watch works
});

test("an owner with 100 queues: the overview renders all of them and its polls read no tasks from Cassandra", async () => {
  const tokenC = await tokenFor(secret, ownerC, "*");
  const ids = Array.from({ length: 100 }, () => randomUUID());
  for (let i = 0; i < ids.length; i += 10) {
    await Promise.all(ids.slice(i, i + 10).map(serviceId => call("add", { serviceId, value: { n: 1 } }, ownerC)));
  }

  const w = await newPage();
  await w.page.addInitScript(token => {
    const page = globalThis as any;
    page.sessionStorage.setItem("queue-console.token", token);
    // Notes the moment (ms since the navigation started, the page's clock) the 100th row enters the DOM.
    new page.MutationObserver((_: unknown, observer: any) => {
      if (page.document.querySelectorAll("tr[data-queue-row]").length >= 100) {
        page.hundredthRowAt = page.performance.now();
        observer.disconnect();
      }
    }).observe(page.document, { childList: true, subtree: true });
  }, tokenC);
  const timings: number[] = [];
  const breakdown: string[] = [];
  for (let i = 0; i < 3; i++) {
    // A full load each time (a second goto to the same URL would only move within the page).
    if (i === 0) await w.page.goto(`${origin}/console/#/`);
    else await w.page.reload();
    const handle = await w.page.waitForFunction(() => (globalThis as any).hundredthRowAt, undefined, {
      timeout: 15_000,
    });
    timings.push(Math.round((await handle.jsonValue()) as number));
    breakdown.push(
      await w.page.evaluate(() => {
        const perf = (globalThis as any).performance;
        const nav = perf.getEntriesByType("navigation")[0];
        const list = perf.getEntriesByType("resource").find((r: any) => r.name.endsWith("/api/queues"));
        return (
          `page ${Math.round(nav.responseEnd)} ms, scripts run ${Math.round(nav.domContentLoadedEventEnd)} ms, ` +
          `GET /api/queues ${Math.round(list?.startTime)}→${Math.round(list?.responseEnd)} ms, ` +
          `100 rows ${Math.round((globalThis as any).hundredthRowAt)} ms`
        );
      }),
    );
  }
  const median = [...timings].sort((a, b) => a - b)[1]!;
  console.log(`overview of 100 queues, from navigation to the 100th row: ${timings.join(", ")} ms (median ${median} ms)
${breakdown.join("\n")}`);
  // How fast is a figure (printed above, and in docs/benchmarks.md), not a verdict: it depends on the machine.
  expect(await rowCounts(w.page, ids[0]!)).toEqual({ ready: 1, delayed: 0, inFlight: 0, dead: 0, completed: 0 });

  // Three polls while every statement the queue sends to Cassandra is recorded.
  const statements: string[] = [];
  const execute = client.execute.bind(client) as (...args: unknown[]) => unknown;
  const spy = jest.spyOn(client, "execute").mockImplementation(((...args: unknown[]) => {
    statements.push(String(args[0]));
    return execute(...args);
  }) as never);
  const polls: number[] = [];
  w.page.on("response", response => {
    if (response.url().endsWith("/api/queues")) polls.push(Date.now());
  });
  await waitFor(() => polls.length >= 3, 10_000);
  spy.mockRestore();
  const queueListReads = statements.filter(s => /SELECT service_id, seen_at FROM \w+\.owner_queues/.test(s));
  const taskReads = statements.filter(
    s => /^\s*SELECT\b/.test(s) && /\.(queue_log|task_index|queue_due|queue_dead)\b/.test(s),
  );
  console.log(
    `3 polls of 100 queues: ${statements.length} statements (${queueListReads.length} queue-list reads, ` +
      `${taskReads.length} task reads; the rest is lease renewal)`,
  );
  expect(taskReads).toEqual([]);
  // One read of the owner's queue list per poll (the first and last poll may straddle the recording).
  expect(queueListReads.length).toBeGreaterThanOrEqual(2);
  expect(queueListReads.length).toBeLessThanOrEqual(4);
  expect(w.problems).toEqual([]);
});
