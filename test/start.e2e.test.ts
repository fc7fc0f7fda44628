/**
 * `npm start` as a new user runs it (scripts/start.ts in its own process, against the test
 * Cassandra): it builds the operator console when the build is older than its sources, serves it
 * at /console/ with the gateway, answers /health, and stops cleanly on SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Client } from "cassandra-driver";
import { consoleBuildIsFresh } from "../scripts/console-build";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { freePort } from "./helpers/http-api";

const ROOT = join(__dirname, "..");
const keyspace = uniqueKeyspace("start_e2e");
let client: Client;
let child: ChildProcess | undefined;

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  if (child && child.exitCode === null) child.kill("SIGKILL");
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

test("npm start builds a stale console, serves it and /health, and stops on SIGTERM", async () => {
  // Make the build older than its sources (as after a `git pull` that changed the console).
  const source = join(ROOT, "console", "index.html");
  const old = new Date(statSync(source).mtimeMs - 60_000);
  try {
    utimesSync(join(ROOT, "dist-console", "index.html"), old, old);
  } catch {
    // Not built at all: just as stale.
  }
  expect(consoleBuildIsFresh()).toBe(false);

  const port = await freePort();
  const output: string[] = [];
  const loader = pathToFileURL(require.resolve("tsx")).href;
  child = spawn(process.execPath, ["--import", loader, join(ROOT, "scripts", "start.ts")], {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_ENV: "development",
      PORT: String(port),
      IP: "127.0.0.1",
      TRANSPORTER: "",
      NAMESPACE: `start-${randomBytes(3).toString("hex")}`,
      QUEUE_KEYSPACE: keyspace,
      KEYS_MASTER_KEY: randomBytes(32).toString("base64"),
      API_JWT_SECRET: randomBytes(32).toString("base64"),
      LOGLEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>(resolve => child!.once("exit", code => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output.push(chunk.toString());
      if (output.join("").includes("Ready: node")) resolve();
    };
    child!.stdout!.on("data", onData);
    child!.stderr!.on("data", onData);
    void exited.then(code => reject(new Error(`npm start exited (${code}) before it was ready:\n${output.join("")}`)));
  });
  await ready;

  const text = output.join("");
  expect(text).toContain("Building the operator console");
  expect(text).toContain(`Operator console: http://localhost:${port}/console/ (sign in with a token`);
  expect(consoleBuildIsFresh()).toBe(true);
  const page = await fetch(`http://127.0.0.1:${port}/console/`);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toMatch(/text\/html/);
  expect(await page.text()).toContain("<div");
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  expect(health.status).toBe(200);
  expect(await health.json()).toMatchObject({ cassandra: true });

  child.kill("SIGTERM");
  expect(await exited).toBe(0);
}, 300_000);
