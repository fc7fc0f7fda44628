/**
 * The Docker image's command and environment, without a Docker engine: a folder laid out as the
 * image's /app (the production dependencies from `npm ci --omit=dev`, dist/ compiled by
 * tsconfig.build.json, dist-console/), run with the Dockerfile's CMD and the
 * environment docker-compose.yml gives a queue node (production mode), against the test Cassandra
 * and NATS. The Dockerfile's HEALTHCHECK command must pass, the console and the HTTP API must
 * serve, no secret may reach the logs, SIGTERM must stop it cleanly; and without the master key
 * it must refuse to start, naming the variable.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "cassandra-driver";
import { ensureConsoleBuilt } from "../scripts/console-build";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { freePort, tokenFor } from "./helpers/http-api";

const ROOT = join(__dirname, "..");
const NATS = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const keyspace = uniqueKeyspace("image_e2e");
let client: Client;
/** The image's /app: package.json, the production dependencies, dist/ and dist-console/. */
let app: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  client = await testClient();
  app = mkdtempSync(join(tmpdir(), "image-app-"));
  // The runtime stage: `npm ci --omit=dev` (from the cache the project's own install filled).
  for (const f of ["package.json", "package-lock.json"]) copyFileSync(join(ROOT, f), join(app, f));
  const npm = spawnSync("npm", ["ci", "--omit=dev", "--no-audit", "--no-fund", "--prefer-offline"], {
    cwd: app,
    encoding: "utf8",
  });
  if (npm.status !== 0) throw new Error(`npm ci --omit=dev failed:\n${npm.stdout}\n${npm.stderr}`);
  expect(existsSync(join(app, "node_modules", "typescript"))).toBe(false);
  // The build stage: tsc -p tsconfig.build.json into dist/, and the console.
  const tsc = spawnSync(
    process.execPath,
    [
      join(ROOT, "node_modules", "typescript", "bin", "tsc"),
      "-p",
      "tsconfig.build.json",
      "--outDir",
      join(app, "dist"),
    ],
    { cwd: ROOT, encoding: "utf8" },
  );
  if (tsc.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed:\n${tsc.stdout}\n${tsc.stderr}`);
  await ensureConsoleBuilt();
  cpSync(join(ROOT, "dist-console"), join(app, "dist-console"), { recursive: true });
}, 300_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  if (app) rmSync(app, { recursive: true, force: true });
  await dropKeyspace(client, keyspace);
  await client?.shutdown();
});

/** The environment docker-compose.yml gives a queue node (the `&queue-env` block), with nothing set on the host. */
function composeEnvironment(): Record<string, string> {
  const lines = readFileSync(join(ROOT, "docker-compose.yml"), "utf8").split("\n");
  const start = lines.findIndex(l => l.includes("environment: &queue-env"));
  expect(start).toBeGreaterThan(-1);
  const env: Record<string, string> = {};
  for (const line of lines.slice(start + 1)) {
    const m = /^ {4}([A-Z_]+): (.*)$/.exec(line);
    if (!m) break;
    // Compose's `${NAME:-default}` with nothing set is the default; `${NAME:?...}` stays (required).
    env[m[1]!] = m[2]!.replace(/^"(.*)"$/, "$1").replace(/^\$\{[A-Z_]+:-([^}]*)\}$/, "$1");
  }
  return env;
}

/** A JSON array instruction of the Dockerfile (CMD, or the HEALTHCHECK's CMD). */
function dockerfileCommand(instruction: "CMD" | "HEALTHCHECK"): string[] {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8").replace(/\\\n\s*/g, " ");
  const line = text.split("\n").find(l => l.startsWith(`${instruction} `))!;
  return JSON.parse(line.slice(line.indexOf("CMD") + 3).trim()) as string[];
}

function startNode(env: Record<string, string>) {
  const [program, ...args] = dockerfileCommand("CMD");
  expect(program).toBe("node");
  // The image's command, from its WORKDIR, with the Node of this run (the image's is Node 24 too).
  const child = spawn(process.execPath, args, {
    cwd: app,
    env: { PATH: process.env.PATH ?? "", HOME: app, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let output = "";
  const exited = new Promise<number | null>(resolve => child.once("exit", code => resolve(code)));
  const grab = (chunk: Buffer) => (output += chunk.toString());
  child.stdout!.on("data", grab);
  child.stderr!.on("data", grab);
  return { child, exited, output: () => output };
}

test("the image's command with the compose file's environment serves in production mode", async () => {
  const compose = composeEnvironment();
  expect(compose).toMatchObject({ NODE_ENV: "production", PORT: "3000" });
  expect(compose.KEYS_MASTER_KEY).toMatch(/^\$\{KEYS_MASTER_KEY:\?/);
  expect(compose.API_JWT_SECRET).toMatch(/^\$\{API_JWT_SECRET:\?/);
  const port = await freePort();
  const masterKey = randomBytes(32).toString("base64");
  const apiSecret = randomBytes(32).toString("base64");
  const env = {
    ...compose,
    // What differs outside a compose network: where Cassandra and NATS are, the port, names.
    CASSANDRA_CONTACT_POINTS: process.env.CASSANDRA_CONTACT_POINTS ?? "127.0.0.1:9042",
    CASSANDRA_LOCAL_DC: process.env.CASSANDRA_LOCAL_DC ?? "datacenter1",
    TRANSPORTER: NATS,
    NAMESPACE: `image-${randomBytes(3).toString("hex")}`,
    LOGLEVEL: "info",
    NODEID: "image-1",
    PORT: String(port),
    QUEUE_KEYSPACE: keyspace,
    KEYS_MASTER_KEY: masterKey,
    API_JWT_SECRET: apiSecret,
  };
  const node = startNode(env);
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (node.output().includes("Ready: node image-1")) {
        clearInterval(timer);
        resolve();
      }
    }, 100);
    void node.exited.then(code => {
      clearInterval(timer);
      reject(new Error(`the node exited (${code}) before it was ready:\n${node.output()}`));
    });
  });

  // The Dockerfile's HEALTHCHECK, as Docker would run it inside the container.
  const [hcProgram, ...hcArgs] = dockerfileCommand("HEALTHCHECK");
  expect(hcProgram).toBe("node");
  const health = spawnSync(process.execPath, hcArgs, {
    env: { PORT: String(port) },
    encoding: "utf8",
    timeout: 30_000,
  });
  expect(health.status).toBe(0);

  const console = await fetch(`http://127.0.0.1:${port}/console/`);
  expect(console.status).toBe(200);
  const serviceId = randomUUID();
  const token = await tokenFor(apiSecret, "owner-image", [serviceId]);
  const post = (op: string, body: object) =>
    fetch(`http://127.0.0.1:${port}/api/queue/${serviceId}/${op}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  expect((await post("add", { value: { msg: "from the image" } })).status).toBe(200);
  const fetched = await post("fetch", { workerId: "w" });
  expect(fetched.status).toBe(200);
  expect(await fetched.json()).toEqual({ msg: "from the image" });
  expect((await post("ack", { workerId: "w" })).status).toBe(200);

  node.child.kill("SIGTERM");
  expect(await node.exited).toBe(0);
  const logs = node.output();
  expect(logs).not.toContain(masterKey);
  expect(logs).not.toContain(apiSecret);
  expect(logs).not.toMatch(/development/i);
}, 180_000);

test("without KEYS_MASTER_KEY the image's command refuses to start in production, naming the variable", async () => {
  const compose = composeEnvironment();
  const apiSecret = randomBytes(32).toString("base64");
  const { KEYS_MASTER_KEY: _unset, ...rest } = compose;
  void _unset;
  const node = startNode({
    ...rest,
    CASSANDRA_CONTACT_POINTS: process.env.CASSANDRA_CONTACT_POINTS ?? "127.0.0.1:9042",
    CASSANDRA_LOCAL_DC: process.env.CASSANDRA_LOCAL_DC ?? "datacenter1",
    TRANSPORTER: NATS,
    NAMESPACE: `image-${randomBytes(3).toString("hex")}`,
    NODEID: "image-2",
    PORT: String(await freePort()),
    QUEUE_KEYSPACE: keyspace,
    API_JWT_SECRET: apiSecret,
  });
  expect(await node.exited).not.toBe(0);
  expect(node.output()).toContain("KEYS_MASTER_KEY");
  expect(node.output()).not.toContain(apiSecret);
  expect(existsSync(join(app, ".dev-master-key"))).toBe(false);
}, 120_000);
