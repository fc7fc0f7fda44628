/**
 * The package as a consumer gets it: `npm pack` (which builds dist/ through prepack), a fresh
 * project outside the repository that `npm install`s the tarball (its dependencies come from the
 * registry), then a CommonJS file, an ES module and a TypeScript file (type-checked with the
 * project's tsc) that import the package, start a broker with its services against the test
 * Cassandra and process tasks with its workers. They run on the project's pinned Node.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import type { Client } from "cassandra-driver";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";

const run = promisify(execFile);
const repo = resolve(__dirname, "..");
const bin = join(repo, "node_modules", ".bin");
const node = join(bin, "node");
/** The pinned Node first on PATH, so that npm and its scripts run on it too. */
const env = { ...process.env, PATH: `${bin}${os.platform() === "win32" ? ";" : ":"}${process.env.PATH ?? ""}` };
const keyspaces = {
  cjs: uniqueKeyspace("consumer_cjs"),
  esm: uniqueKeyspace("consumer_esm"),
  ts: uniqueKeyspace("consumer_ts"),
};

let workDir: string;
let app: string;
let tarball: string;
let client: Client;

/** Runs a command; on failure the error carries its output, which jest prints. */
async function sh(file: string, args: string[], cwd: string, timeout: number): Promise<string> {
  try {
    const { stdout } = await run(file, args, { cwd, env, timeout, maxBuffer: 32 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

/** Runs one consumer file on the pinned Node; its last output line is a JSON report. */
async function runConsumer(file: string, keyspace: string): Promise<any> {
  const { stdout } = await run(node, [file], {
    cwd: app,
    env: { ...env, TEST_KEYSPACE: keyspace },
    timeout: 120_000,
  }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
    throw new Error(`node ${file} failed: ${err.message}\n${err.stdout ?? ""}\n${err.stderr ?? ""}`);
  });
  const last = stdout.trim().split("\n").at(-1) ?? "";
  return JSON.parse(last);
}

beforeAll(async () => {
  client = await testClient();
  workDir = await mkdtemp(join(os.tmpdir(), "mcq-consumer-"));
  await sh("npm", ["pack", "--pack-destination", workDir, "--silent"], repo, 300_000);
  const packed = (await readdir(workDir)).filter(f => f.endsWith(".tgz"));
  expect(packed).toHaveLength(1);
  tarball = join(workDir, packed[0]!);
  app = join(workDir, "app");
  await mkdir(app);
  await writeFile(join(app, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  await sh("npm", ["install", tarball, "--no-audit", "--no-fund", "--prefer-offline"], app, 480_000);
  for (const [name, text] of Object.entries(consumerFiles)) await writeFile(join(app, name), text);
}, 900_000);

afterAll(async () => {
  if (client) for (const keyspace of Object.values(keyspaces)) await dropKeyspace(client, keyspace);
  await client?.shutdown();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

test("the tarball holds dist/, dist-console/, README.md (with its screenshots), CHANGELOG.md, LICENSE, docs/ARCHITECTURE.md and package.json, nothing else", async () => {
  const files = (await sh("tar", ["-tzf", tarball], workDir, 30_000)).trim().split("\n");
  const outside = files.filter(
    f =>
      !f.startsWith("package/dist/") &&
      !f.startsWith("package/dist-console/") &&
      ![
        "package/package.json",
        "package/README.md",
        "package/CHANGELOG.md",
        "package/LICENSE",
        "package/docs/ARCHITECTURE.md",
        "package/docs/console-overview.png",
        "package/docs/console-queue.png",
      ].includes(f),
  );
  expect(outside).toEqual([]);
  expect(files).toEqual(
    expect.arrayContaining([
      "package/README.md",
      "package/LICENSE",
      "package/docs/ARCHITECTURE.md",
      "package/dist/index.js",
      "package/dist/index.d.ts",
      "package/dist/lib/worker/queue-worker.js",
      "package/dist/lib/worker/http-queue-worker.js",
      "package/dist/lib/cli/main.js",
      "package/dist-console/index.html",
      "package/CHANGELOG.md",
      "package/docs/console-overview.png",
      "package/docs/console-queue.png",
    ]),
  );
  // The local Cassandra launcher and the development secrets are tools of a checkout, not of the package.
  expect(files.filter(f => /launcher|dev-secret|console-build/.test(f))).toEqual([]);
  expect(files.filter(f => /\/(test|bench|scripts|examples)\/|\.ts$(?<!\.d\.ts)|\.dev-|\.env|\.cache/.test(f))).toEqual(
    [],
  );
});

test("the package installs the queuectl command", async () => {
  const usage = await sh(join(app, "node_modules", ".bin", "queuectl"), ["--help"], app, 60_000);
  expect(usage).toMatch(/^usage: queuectl <command>/);
  expect(usage).toContain("purge <serviceId> --yes");
});

test("the package installs the queue-node command, which needs a Cassandra to be named", async () => {
  const answer = await run(join(app, "node_modules", ".bin", "queue-node"), [], {
    cwd: app,
    env: { PATH: env.PATH ?? "", NODE_ENV: "production" },
    timeout: 60_000,
  }).then(
    () => ({ code: 0, stderr: "" }),
    (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: err.stderr ?? "" }),
  );
  expect(answer.code).toBe(1);
  expect(answer.stderr).toContain("CASSANDRA_CONTACT_POINTS is not set");
});

test("CommonJS: require() it, encrypt with KeysService, guard with AclMiddleware, work with QueueWorker", async () => {
  const report = await runConsumer("consumer.cjs", keyspaces.cjs);
  expect(report).toEqual({
    results: [10, 20, 30, 40, 50],
    refusedType: "GRANT_REQUIRED",
    refusedIsPackageError: true,
    exports: ["AclMiddleware", "HttpQueueWorker", "KeysService", "QueueService", "QueueWorker", "QueueWorkerMixin"],
  });
}, 180_000);

test("ES module: named imports, the HTTP gateway (ApiService) and HttpQueueWorker from the http-worker entry", async () => {
  const report = await runConsumer("consumer.mjs", keyspaces.esm);
  expect(report).toEqual({ results: ["a!", "b!", "c!"], sameClass: true, errorsNamespace: true });
}, 180_000);

test("TypeScript: type-checked with tsc, a service with QueueWorkerMixin processes the queue", async () => {
  await sh(join(bin, "tsc"), ["-p", "tsconfig.json"], app, 120_000);
  const report = await runConsumer("consumer.ts", keyspaces.ts);
  expect(report).toEqual({ handled: ["ts:1", "ts:2", "ts:3"], closed: true });
}, 300_000);

const replication = `"{'class': 'SimpleStrategy', 'replication_factor': 1}"`;

/** The consumer project's files. They only use what the package exports. */
const consumerFiles: Record<string, string> = {
  "consumer.cjs": `
const { randomBytes, randomUUID } = require("node:crypto");
const { ServiceBroker } = require("moleculer");
const pkg = require("moleculer-cassandra-queue");
const { AclMiddleware, KeysService, QueueService, QueueWorker, errors, mintAccessToken } = pkg;

async function main() {
  const keyspace = process.env.TEST_KEYSPACE;
  const secret = randomBytes(32).toString("base64");
  const broker = new ServiceBroker({
    nodeID: "consumer-cjs",
    logger: false,
    middlewares: [AclMiddleware({ grants: { secret } })],
  });
  broker.createService(KeysService({ keyspace, replication: ${replication}, masterKey: randomBytes(32).toString("base64") }));
  broker.createService(QueueService({ engine: { keyspace } }));
  await broker.start();
  const meta = { grant: await mintAccessToken({ secret, ownerId: "consumer-cjs", services: "*" }) };
  const serviceId = randomUUID();
  for (let n = 1; n <= 5; n++) await broker.call("worker.queue.add", { serviceId, value: { n } }, { meta });
  const results = [];
  const worker = new QueueWorker(broker, { serviceId, concurrency: 2, wait: 1, meta }, async value => value.n * 10);
  await new Promise((resolve, reject) => {
    worker.on("completed", (_task, result) => results.push(result) === 5 && resolve());
    worker.on("error", reject);
  });
  await worker.close();
  const refused = await broker.call("worker.queue.stats", { serviceId }).catch(err => err);
  await broker.stop();
  console.log(JSON.stringify({
    results: results.sort((a, b) => a - b),
    refusedType: refused.type,
    refusedIsPackageError: refused instanceof errors.GrantRequiredError,
    exports: ["AclMiddleware", "HttpQueueWorker", "KeysService", "QueueService", "QueueWorker", "QueueWorkerMixin"].filter(
      name => typeof pkg[name] === "function",
    ),
  }));
}
main().catch(err => { console.error(err); process.exit(1); });
`,
  "consumer.mjs": `
import { randomBytes, randomUUID } from "node:crypto";
import { ServiceBroker } from "moleculer";
import { AclMiddleware, ApiService, PlainCodec, QueueService, errors, mintAccessToken, HttpQueueWorker as FromRoot } from "moleculer-cassandra-queue";
import { HttpQueueClient, HttpQueueWorker } from "moleculer-cassandra-queue/http-worker";

const keyspace = process.env.TEST_KEYSPACE;
const secret = randomBytes(32).toString("base64");
const broker = new ServiceBroker({ nodeID: "consumer-esm", logger: false, middlewares: [AclMiddleware({ grants: { secret } })] });
broker.createService(QueueService({ engine: { keyspace }, codec: () => new PlainCodec() }));
broker.createService(ApiService({ port: 0, ip: "127.0.0.1", jwt: { secret } }));
await broker.start();
const baseUrl = "http://127.0.0.1:" + broker.getLocalService("api").settings.port;
const serviceId = randomUUID();
const token = await mintAccessToken({ secret, ownerId: "consumer-esm", services: [serviceId] });
const producer = new HttpQueueClient({ baseUrl, token, serviceId });
for (const v of ["a", "b", "c"]) await producer.add(v);
const results = [];
const worker = new HttpQueueWorker({ baseUrl, token, serviceId, concurrency: 3, wait: 1 }, async value => value + "!");
await new Promise((resolve, reject) => {
  worker.on("completed", (_task, result) => results.push(result) === 3 && resolve());
  worker.on("error", reject);
});
await worker.close();
await broker.stop();
console.log(JSON.stringify({
  results: results.sort(),
  sameClass: FromRoot === HttpQueueWorker,
  errorsNamespace: typeof errors.ValueTooLargeError === "function",
}));
`,
  "consumer.ts": `
import { randomBytes, randomUUID } from "node:crypto";
import { ServiceBroker, type Service } from "moleculer";
import {
  AclMiddleware,
  KeysService,
  QueueService,
  QueueWorkerMixin,
  errors,
  type QueueStats,
  type QueueWorkerMixinVars,
  type WorkerTask,
} from "moleculer-cassandra-queue";

const keyspace = process.env.TEST_KEYSPACE ?? "";
const meta = { ownerId: "consumer-ts" };
const serviceId = randomUUID();
const handled: string[] = [];

const broker = new ServiceBroker({ nodeID: "consumer-ts", logger: false, middlewares: [AclMiddleware({ trustMeta: true })] });
broker.createService(KeysService({ keyspace, replication: ${replication}, masterKey: randomBytes(32).toString("base64") }));
broker.createService(QueueService({ engine: { keyspace } }));
const worker = broker.createService({
  name: "ts-worker",
  mixins: [QueueWorkerMixin({ meta, wait: 1 })],
  settings: { prefix: "ts" },
  queueWorkers: {
    [serviceId]: {
      concurrency: 2,
      timeToRecover: 30,
      async handler(this: Service<{ prefix: string }>, value: { n: number }, task: WorkerTask): Promise<number> {
        handled.push(this.settings.prefix + ":" + value.n);
        await task.progress({ n: value.n });
        return value.n;
      },
    },
  },
}) as Service & QueueWorkerMixinVars;
await broker.start();
for (let n = 1; n <= 3; n++) await broker.call("worker.queue.add", { serviceId, value: { n } }, { meta });
const deadline = Date.now() + 60_000;
while (handled.length < 3 && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
const stats = await broker.call<QueueStats, object>("worker.queue.stats", { serviceId }, { meta });
const refusal: InstanceType<typeof errors.OwnerMissingError> = new errors.OwnerMissingError("check");
const workers = [...worker.$queueWorkers.values()];
await broker.stop();
console.log(JSON.stringify({
  handled: handled.sort(),
  closed: workers.length === 1 && !workers[0]!.isRunning && stats.ready === 0 && refusal.type === "OWNER_MISSING",
}));
`,
  "tsconfig.json": JSON.stringify(
    {
      compilerOptions: {
        target: "ES2022",
        module: "nodenext",
        moduleResolution: "nodenext",
        strict: true,
        noEmit: true,
        // moleculer's own declarations do not pass a full check (optional loggers' and transporters' types).
        skipLibCheck: true,
        types: ["node"],
        typeRoots: [join(repo, "node_modules", "@types")],
      },
      files: ["consumer.ts"],
    },
    null,
    2,
  ),
};
