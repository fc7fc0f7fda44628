/**
 * Gets a running Cassandra for development, tests and CI, in this order:
 *   1. CASSANDRA_CONTACT_POINTS is set: use it, start nothing;
 *   2. a Docker engine answers: a `cassandra:5.0` container through testcontainers;
 *   3. otherwise Apache Cassandra 5.0.6 in a local JVM, from Maven Central jars kept in `.cache/cassandra`.
 * Plain Node: no Moleculer imports, so scripts and jest's global setup can use it directly.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, createWriteStream } from "node:fs";
import { createServer, createConnection } from "node:net";
import { dirname, join, resolve } from "node:path";
import { Client } from "cassandra-driver";

export const CASSANDRA_VERSION = "5.0.6";

/** Settings of {@link ensureCassandra}; each one falls back to its environment variable, then to its default. */
export interface LauncherOptions {
  /** Which way to get a Cassandra. "auto" follows the order above. @defaultValue "auto" */
  mode?: "auto" | "external" | "docker" | "jvm";
  /** Environment to read CASSANDRA_* from (and the PATH used to find java and mvn). @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
  /** Where the jars and generated files live. @defaultValue `<project>/.cache/cassandra` */
  cacheDir?: string;
  /** CQL port; 0 picks a free one. @defaultValue CASSANDRA_NATIVE_PORT or 9042 */
  nativePort?: number;
  /** Inter-node port; 0 picks a free one. @defaultValue CASSANDRA_STORAGE_PORT or 7000 */
  storagePort?: number;
  /** Address the node binds (listen and CQL). @defaultValue "127.0.0.1" */
  listenAddress?: string;
  /** Seed addresses ("host:storagePort", comma separated) for a multi-node cluster. @defaultValue the node itself */
  seeds?: string;
  /** The node's token (each node of a cluster needs its own). @defaultValue "0" */
  initialToken?: string;
  /** Node data folder. Kept when given; a fresh one, removed by stop(), otherwise. @defaultValue CASSANDRA_DATA_DIR */
  dataDir?: string;
  /** JVM heap (-Xms and -Xmx). @defaultValue CASSANDRA_HEAP or "1G" */
  heap?: string;
  /** "batch" fsyncs the commit log before acknowledging a write; "periodic" every 10 s. @defaultValue CASSANDRA_COMMITLOG_SYNC or "periodic" */
  commitlogSync?: "periodic" | "batch";
  /** The java executable. @defaultValue `$JAVA_HOME/bin/java` when JAVA_HOME is set, else `java` on PATH */
  javaPath?: string;
  /** The Maven executable. @defaultValue `mvn` on PATH */
  mvnPath?: string;
  /** Use a Cassandra that already answers CQL on the port instead of failing. @defaultValue false */
  reuseIfRunning?: boolean;
  /** Copy the JVM's own output (WARN and above) to stderr. @defaultValue false */
  echoOutput?: boolean;
  /** How long the JVM may take to answer CQL. @defaultValue 180000 */
  startTimeoutMs?: number;
  /** Progress lines. @defaultValue a line on stderr */
  log?: (line: string) => void;
}

export interface CassandraHandle {
  /** "host:port" entries for CASSANDRA_CONTACT_POINTS. */
  contactPoints: string[];
  localDataCenter: string;
  /** True when stop() ends a process or container this call started. */
  startedByUs: boolean;
  pid?: number;
  /** The node's data folder, when it runs in a local JVM. */
  dataDir?: string;
  /** Where the local JVM's output goes. */
  logFile?: string;
  /** Settles when a local JVM this call started exits, for whatever reason. */
  exited?: Promise<number | null>;
  /** Ends what this call started (nothing otherwise) and waits until it is gone. */
  stop(): Promise<void>;
}

/** A Cassandra could not be had; the message says what to do. */
export class CassandraLaunchError extends Error {
  override name = "CassandraLaunchError";
}

const LOCAL_DC = "datacenter1";
const JAVA_REQUIRED =
  "Java 17 is required to run a local Cassandra: install openjdk-17-jdk-headless, or set CASSANDRA_CONTACT_POINTS";
const MAVEN_REQUIRED =
  "Maven is required to download Cassandra's jars: install maven (with openjdk-17-jdk-headless), or set CASSANDRA_CONTACT_POINTS";
const OUTPUT_LINES_KEPT = 200;
const OUTPUT_LINES_SHOWN = 20;

function stderrLog(line: string): void {
  process.stderr.write(`[cassandra] ${line}\n`);
}

/** The folder holding package.json, found upwards from this file (works from lib/ and from dist/lib/). */
export function projectRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

export function defaultCacheDir(): string {
  return join(projectRoot(), ".cache", "cassandra");
}

export async function ensureCassandra(options: LauncherOptions = {}): Promise<CassandraHandle> {
  const env = options.env ?? process.env;
  const mode = options.mode ?? "auto";
  const log = options.log ?? stderrLog;

  if (mode === "external" || (mode === "auto" && env.CASSANDRA_CONTACT_POINTS)) {
    return externalCassandra(env);
  }
  if (mode === "docker" || (mode === "auto" && (await dockerAnswers(env)))) {
    return dockerCassandra(log);
  }
  return jvmCassandra(options, env, log);
}

function externalCassandra(env: NodeJS.ProcessEnv): CassandraHandle {
  const contactPoints = (env.CASSANDRA_CONTACT_POINTS ?? "")
    .split(",")
    .map(s => s.trim())
    .filter(Boolean);
  if (contactPoints.length === 0) {
    throw new CassandraLaunchError(
      "CASSANDRA_CONTACT_POINTS is empty: set it to host:port of a running Cassandra, or unset it to start one",
    );
  }
  return {
    contactPoints,
    localDataCenter: env.CASSANDRA_LOCAL_DC || LOCAL_DC,
    startedByUs: false,
    stop: async () => {},
  };
}

/** True when `docker info` succeeds within a few seconds (a CLI without an engine fails fast). */
async function dockerAnswers(env: NodeJS.ProcessEnv): Promise<boolean> {
  return new Promise(resolvePromise => {
    let child: ChildProcess;
    try {
      child = spawn("docker", ["info"], { env, stdio: "ignore" });
    } catch {
      resolvePromise(false);
      return;
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolvePromise(false);
    }, 5000);
    child.on("error", () => {
      clearTimeout(timer);
      resolvePromise(false);
    });
    child.on("exit", code => {
      clearTimeout(timer);
      resolvePromise(code === 0);
    });
  });
}

async function dockerCassandra(log: (line: string) => void): Promise<CassandraHandle> {
  const started = Date.now();
  log("starting a cassandra:5.0 container (Docker engine found)…");
  const { CassandraContainer } = await import("@testcontainers/cassandra");
  const container = await new CassandraContainer("cassandra:5.0").start();
  log(`ready in ${seconds(started)} s at ${container.getContactPoint()}`);
  return {
    contactPoints: [container.getContactPoint()],
    localDataCenter: container.getDatacenter(),
    startedByUs: true,
    stop: async () => {
      await container.stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Way 3: a local JVM.

interface JvmSettings {
  cacheDir: string;
  libDir: string;
  confDir: string;
  dataDir: string;
  freshDataDir: boolean;
  listenAddress: string;
  nativePort: number;
  storagePort: number;
  seeds: string;
  initialToken: string;
  heap: string;
  commitlogSync: "periodic" | "batch";
  javaPath: string;
  mvnPath: string;
}

async function jvmCassandra(
  options: LauncherOptions,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<CassandraHandle> {
  const started = Date.now();
  const settings = await jvmSettings(options, env);
  checkJava(settings.javaPath, env);

  const taken = await portsInUse(settings.listenAddress, [settings.nativePort, settings.storagePort]);
  if (taken.includes(settings.nativePort) && options.reuseIfRunning) {
    const contactPoint = `${settings.listenAddress}:${settings.nativePort}`;
    if (await cqlAnswers(contactPoint, LOCAL_DC)) {
      log(`using the Cassandra already answering at ${contactPoint}`);
      return { contactPoints: [contactPoint], localDataCenter: LOCAL_DC, startedByUs: false, stop: async () => {} };
    }
  }
  if (taken.length > 0) {
    const which = taken.map(p => (p === settings.nativePort ? `${p} (CQL)` : `${p} (storage)`)).join(" and ");
    throw new CassandraLaunchError(
      `Port ${which} on ${settings.listenAddress} is already in use (another Cassandra, e.g. \`npm run cassandra\`?): ` +
        `set CASSANDRA_CONTACT_POINTS=${settings.listenAddress}:${settings.nativePort} to use it, ` +
        `or CASSANDRA_NATIVE_PORT / CASSANDRA_STORAGE_PORT to start one on other ports`,
    );
  }

  await fetchCassandraJars({ cacheDir: settings.cacheDir, mvnPath: settings.mvnPath, env, log });
  writeConfiguration(settings);
  removeStaleRuns(settings.cacheDir);

  log(
    `starting Cassandra ${CASSANDRA_VERSION} on ${settings.listenAddress}:${settings.nativePort} ` +
      `(data ${settings.dataDir}, commitlog_sync ${settings.commitlogSync})…`,
  );
  const node = startJvm(settings, env, options.echoOutput ?? false);
  const contactPoint = `${settings.listenAddress}:${settings.nativePort}`;
  log("waiting for CQL…");
  try {
    await waitForCql(node, contactPoint, options.startTimeoutMs ?? 180_000);
  } catch (error) {
    await node.stop();
    throw error;
  }
  log(`ready in ${seconds(started)} s at ${contactPoint}`);

  return {
    contactPoints: [contactPoint],
    localDataCenter: LOCAL_DC,
    startedByUs: true,
    pid: node.pid,
    dataDir: settings.dataDir,
    logFile: join(settings.dataDir, "logs", "output.log"),
    exited: node.exited,
    stop: async () => {
      await node.stop();
      if (settings.freshDataDir) rmSync(settings.dataDir, { recursive: true, force: true });
    },
  };
}

/** One node of a local cluster, which a fault run can kill and start again. */
export interface ClusterNode {
  address: string;
  contactPoint: string;
  dataDir: string;
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Sends a signal to the node's JVM (SIGKILL for a crash, SIGSTOP / SIGCONT for a pause). */
  signal(signal: NodeJS.Signals): void;
  /** Starts the node again on its data (after a kill or a stop), and waits until it answers CQL. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface LocalCluster {
  contactPoints: string[];
  localDataCenter: string;
  nodes: ClusterNode[];
  stop(): Promise<void>;
}

export interface ClusterOptions extends Pick<
  LauncherOptions,
  "cacheDir" | "commitlogSync" | "javaPath" | "mvnPath" | "log"
> {
  /** How many nodes. @defaultValue 3 */
  nodes?: number;
  /** The nodes bind 127.0.0.<firstHost>, <firstHost + 1>... @defaultValue 2 */
  firstHost?: number;
  /** Where the nodes' data folders go (one sub-folder each); kept. @defaultValue `<cache>/cluster` */
  dataRoot?: string;
  /** Heap of each node. @defaultValue "512M" */
  heap?: string;
  nativePort?: number;
  storagePort?: number;
  env?: NodeJS.ProcessEnv;
}

/** Evenly spaced Murmur3 tokens, one per node. */
export function clusterTokens(n: number): string[] {
  const span = 2n ** 64n / BigInt(n);
  return Array.from({ length: n }, (_, i) => String(-(2n ** 63n) + span * BigInt(i)));
}

/**
 * Starts an N-node Cassandra cluster in local JVMs on loopback addresses (127.0.0.2, .3, ... by
 * default), each with its own token, data folder and a small heap, the first node as seed. The
 * nodes start one after another (each must answer CQL before the next starts).
 */
export async function startLocalCluster(options: ClusterOptions = {}): Promise<LocalCluster> {
  const env = options.env ?? process.env;
  const log = options.log ?? stderrLog;
  const n = options.nodes ?? 3;
  const firstHost = options.firstHost ?? 2;
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const dataRoot = resolve(options.dataRoot ?? join(cacheDir, "cluster"));
  const nativePort = options.nativePort ?? 9042;
  const storagePort = options.storagePort ?? 7000;
  const tokens = clusterTokens(n);
  const addresses = Array.from({ length: n }, (_, i) => `127.0.0.${firstHost + i}`);
  const seeds = `${addresses[0]}:${storagePort}`;
  const settings: JvmSettings[] = [];
  for (let i = 0; i < n; i++) {
    const s = await jvmSettings(
      {
        cacheDir,
        listenAddress: addresses[i],
        nativePort,
        storagePort,
        seeds,
        initialToken: tokens[i],
        dataDir: join(dataRoot, `node${i + 1}`),
        heap: options.heap ?? "512M",
        commitlogSync: options.commitlogSync,
        javaPath: options.javaPath,
        mvnPath: options.mvnPath,
      },
      env,
    );
    settings.push(s);
  }
  checkJava(settings[0]!.javaPath, env);
  await fetchCassandraJars({ cacheDir, mvnPath: settings[0]!.mvnPath, env, log });

  const nodes: ClusterNode[] = settings.map(s => {
    let jvm: RunningJvm | undefined;
    const contactPoint = `${s.listenAddress}:${s.nativePort}`;
    return {
      address: s.listenAddress,
      contactPoint,
      dataDir: s.dataDir,
      get pid() {
        return jvm?.pid;
      },
      get running() {
        return jvm !== undefined && !jvm.hasExited();
      },
      signal(signal: NodeJS.Signals) {
        if (jvm?.pid !== undefined && !jvm.hasExited()) process.kill(jvm.pid, signal);
      },
      async start() {
        if (jvm && !jvm.hasExited()) return;
        const taken = await portsInUse(s.listenAddress, [s.nativePort, s.storagePort]);
        if (taken.length > 0) {
          throw new CassandraLaunchError(
            `Port ${taken.join(" and ")} on ${s.listenAddress} is already in use: another cluster is running there`,
          );
        }
        writeConfiguration(s);
        const t0 = Date.now();
        log(`starting cluster node ${s.listenAddress} (token ${s.initialToken}, data ${s.dataDir})…`);
        jvm = startJvm(s, env, false);
        await waitForCql(jvm, contactPoint, 300_000);
        log(`cluster node ${s.listenAddress} ready in ${seconds(t0)} s`);
      },
      async stop() {
        await jvm?.stop();
      },
    };
  });
  const stopAll = async () => {
    await Promise.all(nodes.map(node => node.stop()));
  };
  try {
    for (const node of nodes) await node.start();
  } catch (err) {
    await stopAll();
    throw err;
  }
  return { contactPoints: nodes.map(node => node.contactPoint), localDataCenter: LOCAL_DC, nodes, stop: stopAll };
}

async function jvmSettings(options: LauncherOptions, env: NodeJS.ProcessEnv): Promise<JvmSettings> {
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const listenAddress = options.listenAddress ?? "127.0.0.1";
  let nativePort = options.nativePort ?? portFromEnv(env, "CASSANDRA_NATIVE_PORT", 9042);
  let storagePort = options.storagePort ?? portFromEnv(env, "CASSANDRA_STORAGE_PORT", 7000);
  if (nativePort === 0) nativePort = await freePort(listenAddress);
  if (storagePort === 0) storagePort = await freePort(listenAddress, [nativePort]);

  const commitlogSync = options.commitlogSync ?? env.CASSANDRA_COMMITLOG_SYNC ?? "periodic";
  if (commitlogSync !== "periodic" && commitlogSync !== "batch") {
    throw new CassandraLaunchError(`CASSANDRA_COMMITLOG_SYNC=${commitlogSync} is not valid: use periodic or batch`);
  }
  const heap = options.heap ?? env.CASSANDRA_HEAP ?? "1G";
  if (!/^\d+[kKmMgG]?$/.test(heap)) {
    throw new CassandraLaunchError(`CASSANDRA_HEAP=${heap} is not valid: use a JVM size such as 1G or 768M`);
  }

  const configuredDataDir = options.dataDir ?? env.CASSANDRA_DATA_DIR;
  const dataDir = configuredDataDir
    ? resolve(configuredDataDir)
    : join(cacheDir, "runs", `${timestamp()}-${process.pid}-${nativePort}`);

  return {
    cacheDir,
    libDir: join(cacheDir, "lib"),
    confDir: join(dataDir, "conf"),
    dataDir,
    freshDataDir: !configuredDataDir,
    listenAddress,
    nativePort,
    storagePort,
    seeds: options.seeds ?? `${listenAddress}:${storagePort}`,
    initialToken: options.initialToken ?? "0",
    heap,
    commitlogSync,
    javaPath: options.javaPath ?? (env.JAVA_HOME ? join(env.JAVA_HOME, "bin", "java") : "java"),
    mvnPath: options.mvnPath ?? "mvn",
  };
}

function portFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CassandraLaunchError(`${name}=${raw} is not a port number: use 1-65535 (or 0 for any free port)`);
  }
  return port;
}

/** Fails with one line unless `java` runs and is a version Cassandra 5.0 supports (11 or 17). */
function checkJava(javaPath: string, env: NodeJS.ProcessEnv): void {
  const result = spawnSync(javaPath, ["-version"], { env, encoding: "utf8", timeout: 30_000 });
  if (result.error || result.status !== 0) throw new CassandraLaunchError(JAVA_REQUIRED);
  const match = /version "(\d+)(?:\.(\d+))?/.exec(result.stderr);
  const major = match ? (match[1] === "1" ? Number(match[2]) : Number(match[1])) : NaN;
  if (major !== 17 && major !== 11) {
    throw new CassandraLaunchError(
      `Cassandra ${CASSANDRA_VERSION} runs on Java 11 or 17, but ${javaPath} is Java ${major || "of an unknown version"}: ` +
        "install openjdk-17-jdk-headless and set JAVA_HOME to it, or set CASSANDRA_CONTACT_POINTS",
    );
  }
}

export interface FetchOptions {
  cacheDir?: string;
  mvnPath?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

/**
 * Downloads cassandra-all and its dependencies into `<cacheDir>/lib` with Maven, unless a marker says
 * a previous download completed. Returns the lib folder.
 */
export async function fetchCassandraJars(options: FetchOptions = {}): Promise<string> {
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const env = options.env ?? process.env;
  const log = options.log ?? stderrLog;
  const libDir = join(cacheDir, "lib");
  const marker = join(libDir, `.complete-${CASSANDRA_VERSION}`);
  if (existsSync(marker)) return libDir;

  const mvnPath = options.mvnPath ?? "mvn";
  const probe = spawnSync(mvnPath, ["-v"], { env, encoding: "utf8", timeout: 60_000 });
  if (probe.error || probe.status !== 0) throw new CassandraLaunchError(MAVEN_REQUIRED);

  const started = Date.now();
  log(`downloading Cassandra ${CASSANDRA_VERSION} jars with Maven into ${libDir}…`);
  rmSync(libDir, { recursive: true, force: true });
  mkdirSync(cacheDir, { recursive: true });
  const pom = join(cacheDir, "pom.xml");
  writeFileSync(pom, pomXml());
  const output = await run(
    mvnPath,
    ["-q", "-B", "-f", pom, "dependency:copy-dependencies", `-DoutputDirectory=${libDir}`],
    env,
  );
  if (output.code !== 0) {
    throw new CassandraLaunchError(
      `Maven could not download Cassandra's jars (exit ${output.code}); check that Maven Central is reachable:\n` +
        lastLines(output.lines),
    );
  }
  if (!existsSync(join(libDir, `cassandra-all-${CASSANDRA_VERSION}.jar`)) || !jammJar(libDir)) {
    throw new CassandraLaunchError(
      `Maven finished but ${libDir} lacks cassandra-all or jamm: remove ${cacheDir}, retry`,
    );
  }
  writeFileSync(marker, `${new Date().toISOString()}\n`);
  log(`downloaded ${readdirSync(libDir).filter(f => f.endsWith(".jar")).length} jars in ${seconds(started)} s`);
  return libDir;
}

function pomXml(): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/cassandra-launcher.ts: resolves Apache Cassandra and its dependencies. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.dev</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>${CASSANDRA_VERSION}</version>
    </dependency>
  </dependencies>
</project>
`;
}

function jammJar(libDir: string): string | undefined {
  return readdirSync(libDir).find(f => /^jamm-[\d.]+\.jar$/.test(f));
}

function writeConfiguration(s: JvmSettings): void {
  for (const sub of ["data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs", "conf"]) {
    mkdirSync(join(s.dataDir, sub), { recursive: true });
  }
  // Every key must be known to Cassandra 5.0: an unknown one stops the node at start.
  // Batch mode needs no window setting in 5.0: each write waits for the fsync of its commit log segment.
  const syncLines =
    s.commitlogSync === "periodic"
      ? ["commitlog_sync: periodic", "commitlog_sync_period: 10000ms"]
      : ["commitlog_sync: batch"];
  const yaml = [
    "# Generated by scripts/cassandra-launcher.ts for a local development/test node.",
    "cluster_name: dev",
    "num_tokens: 1",
    `initial_token: ${s.initialToken}`,
    // The nodes of a local cluster start together, empty, each with its own token: nothing to stream.
    "auto_bootstrap: false",
    "partitioner: org.apache.cassandra.dht.Murmur3Partitioner",
    ...syncLines,
    "endpoint_snitch: SimpleSnitch",
    "seed_provider:",
    "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
    "    parameters:",
    `      - seeds: "${s.seeds}"`,
    `listen_address: ${s.listenAddress}`,
    `rpc_address: ${s.listenAddress}`,
    `storage_port: ${s.storagePort}`,
    `native_transport_port: ${s.nativePort}`,
    "start_native_transport: true",
    "auto_snapshot: false",
    "paxos_variant: v2",
    "concurrent_reads: 4",
    "concurrent_writes: 4",
    "concurrent_counter_writes: 2",
    "concurrent_materialized_view_writes: 2",
    `data_file_directories: [${JSON.stringify(join(s.dataDir, "data"))}]`,
    `commitlog_directory: ${JSON.stringify(join(s.dataDir, "commitlog"))}`,
    `saved_caches_directory: ${JSON.stringify(join(s.dataDir, "saved_caches"))}`,
    `hints_directory: ${JSON.stringify(join(s.dataDir, "hints"))}`,
    `cdc_raw_directory: ${JSON.stringify(join(s.dataDir, "cdc_raw"))}`,
    "",
  ].join("\n");
  writeFileSync(join(s.confDir, "cassandra.yaml"), yaml);
  writeFileSync(
    join(s.confDir, "logback.xml"),
    `<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{HH:mm:ss.SSS} [%thread] %logger{0} - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra.transport.Server" level="INFO"/>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
</configuration>
`,
  );
}

function jvmArguments(s: JvmSettings): string[] {
  const addExports = [
    "java.base/jdk.internal.misc",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server",
    "java.sql/java.sql",
    "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc",
    "jdk.compiler/com.sun.tools.javac.file",
    "jdk.attach/sun.tools.attach",
  ];
  const addOpens = [
    "java.base/java.lang.module",
    "java.base/jdk.internal.loader",
    "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect",
    "java.base/jdk.internal.math",
    "java.base/jdk.internal.module",
    "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal",
    "java.base/sun.nio.ch",
    "java.base/java.io",
    "java.base/java.nio",
    "java.base/java.lang.reflect",
    "jdk.compiler/com.sun.tools.javac",
    "java.base/java.lang",
    "java.base/java.util",
  ];
  return [
    `-Xms${s.heap}`,
    `-Xmx${s.heap}`,
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    ...addExports.map(m => `--add-exports=${m}=ALL-UNNAMED`),
    ...addOpens.map(m => `--add-opens=${m}=ALL-UNNAMED`),
    `-javaagent:${join(s.libDir, jammJar(s.libDir) ?? "jamm-0.4.0.jar")}`,
    `-Dcassandra.config=file://${join(s.confDir, "cassandra.yaml")}`,
    `-Dcassandra.storagedir=${s.dataDir}`,
    `-Dcassandra.logdir=${join(s.dataDir, "logs")}`,
    "-Dcassandra-foreground=yes",
    `-Dlogback.configurationFile=${join(s.confDir, "logback.xml")}`,
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=100",
    `-Djava.io.tmpdir=${join(s.dataDir, "tmp")}`,
    "-cp",
    `${s.confDir}:${s.libDir}/*`,
    "org.apache.cassandra.service.CassandraDaemon",
  ];
}

interface RunningJvm {
  pid?: number;
  /** Output lines kept for error messages. */
  lines: string[];
  exited: Promise<number | null>;
  hasExited(): boolean;
  stop(): Promise<void>;
}

/** Started JVMs, ended when this Node process exits so none outlives it. */
const liveJvms = new Set<ChildProcess>();
let exitHandlersInstalled = false;

function installExitHandlers(): void {
  if (exitHandlersInstalled) return;
  exitHandlersInstalled = true;
  process.on("exit", () => {
    for (const child of liveJvms) child.kill("SIGTERM");
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const handler = () => {
      // Another listener (a script's own shutdown) takes care of stopping; otherwise end as the
      // signal would have, after telling the JVMs to stop.
      if (process.listenerCount(signal) > 1) return;
      for (const child of liveJvms) child.kill("SIGTERM");
      process.removeListener(signal, handler);
      process.kill(process.pid, signal);
    };
    process.on(signal, handler);
  }
}

function startJvm(s: JvmSettings, env: NodeJS.ProcessEnv, echoOutput: boolean): RunningJvm {
  mkdirSync(join(s.dataDir, "tmp"), { recursive: true });
  const child = spawn(s.javaPath, jvmArguments(s), {
    cwd: s.dataDir,
    env: { ...env, CASSANDRA_CONF: s.confDir },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group: a Ctrl-C in the terminal reaches Node only, which then stops the
    // services that use Cassandra before Cassandra itself.
    detached: true,
  });
  installExitHandlers();
  liveJvms.add(child);

  const lines: string[] = [];
  const logFile = createWriteStream(join(s.dataDir, "logs", "output.log"), { flags: "a" });
  let partial = "";
  const collect = (chunk: Buffer) => {
    const text = partial + chunk.toString("utf8");
    const parts = text.split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      if (echoOutput) process.stderr.write(`${line}\n`);
    }
    if (lines.length > OUTPUT_LINES_KEPT) lines.splice(0, lines.length - OUTPUT_LINES_KEPT);
    logFile.write(chunk);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  let done = false;
  const exited = new Promise<number | null>(resolvePromise => {
    child.on("error", error => {
      lines.push(String(error.message));
      done = true;
      liveJvms.delete(child);
      logFile.end();
      resolvePromise(null);
    });
    child.on("exit", (code, signal) => {
      if (partial) lines.push(partial);
      lines.push(`(java exited with ${signal ?? `code ${code}`})`);
      done = true;
      liveJvms.delete(child);
      logFile.end();
      resolvePromise(code);
    });
  });

  return {
    pid: child.pid,
    lines,
    exited,
    hasExited: () => done,
    stop: async () => {
      if (done) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

async function waitForCql(node: RunningJvm, contactPoint: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const [host, port] = splitHostPort(contactPoint);
  while (Date.now() < deadline) {
    if (node.hasExited()) {
      throw new CassandraLaunchError(
        `Cassandra exited before answering CQL; its last output:\n${lastLines(node.lines)}`,
      );
    }
    if ((await tcpAnswers(host, port)) && (await cqlAnswers(contactPoint, LOCAL_DC))) return;
    await Promise.race([sleep(500), node.exited]);
  }
  throw new CassandraLaunchError(
    `Cassandra did not answer CQL at ${contactPoint} within ${timeoutMs / 1000} s; its last output:\n${lastLines(node.lines)}`,
  );
}

/** True when `SELECT release_version FROM system.local` answers at the contact point. */
export async function cqlAnswers(contactPoint: string, localDataCenter: string): Promise<boolean> {
  const [host, port] = splitHostPort(contactPoint);
  const client = new Client({
    contactPoints: [host],
    localDataCenter,
    protocolOptions: { port },
    socketOptions: { connectTimeout: 3000, readTimeout: 5000 },
    pooling: { warmup: false },
  });
  try {
    await client.connect();
    const rs = await client.execute("SELECT release_version FROM system.local");
    return rs.rows.length === 1;
  } catch {
    return false;
  } finally {
    await client.shutdown().catch(() => {});
  }
}

function splitHostPort(contactPoint: string): [string, number] {
  const index = contactPoint.lastIndexOf(":");
  return [contactPoint.slice(0, index), Number(contactPoint.slice(index + 1))];
}

function tcpAnswers(host: string, port: number): Promise<boolean> {
  return new Promise(resolvePromise => {
    const socket = createConnection({ host, port });
    socket.setTimeout(1000);
    const finish = (ok: boolean) => {
      socket.destroy();
      resolvePromise(ok);
    };
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
    socket.once("timeout", () => finish(false));
  });
}

/** The ports among `ports` that cannot be bound on `host`. */
async function portsInUse(host: string, ports: number[]): Promise<number[]> {
  const taken: number[] = [];
  for (const port of ports) {
    const free = await new Promise<boolean>(resolvePromise => {
      const server = createServer();
      server.once("error", () => resolvePromise(false));
      server.listen({ host, port, exclusive: true }, () => server.close(() => resolvePromise(true)));
    });
    if (!free) taken.push(port);
  }
  return taken;
}

async function freePort(host: string, avoid: number[] = []): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolvePromise, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen({ host, port: 0, exclusive: true }, () => {
        const address = server.address();
        const chosen = typeof address === "object" && address ? address.port : 0;
        server.close(() => resolvePromise(chosen));
      });
    });
    if (!avoid.includes(port)) return port;
  }
}

/** Removes fresh data folders left by processes that died without stop(). */
function removeStaleRuns(cacheDir: string): void {
  const runs = join(cacheDir, "runs");
  if (!existsSync(runs)) return;
  for (const name of readdirSync(runs)) {
    const pid = Number(/^\d{8}-\d{6}-(\d+)-\d+$/.exec(name)?.[1]);
    if (pid && pid !== process.pid && !processAlive(pid)) rmSync(join(runs, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; lines: string[] }> {
  return new Promise(resolvePromise => {
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => chunks.push(c));
    child.stderr.on("data", (c: Buffer) => chunks.push(c));
    child.on("error", error => resolvePromise({ code: null, lines: [error.message] }));
    child.on("close", code => resolvePromise({ code, lines: Buffer.concat(chunks).toString("utf8").split("\n") }));
  });
}

function lastLines(lines: string[]): string {
  return lines
    .filter(line => line.trim() !== "")
    .slice(-OUTPUT_LINES_SHOWN)
    .map(line => `  ${line}`)
    .join("\n");
}

function timestamp(): string {
  const iso = new Date().toISOString();
  return `${iso.slice(0, 10).replace(/-/g, "")}-${iso.slice(11, 19).replace(/:/g, "")}`;
}

function seconds(since: number): string {
  return ((Date.now() - since) / 1000).toFixed(1);
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolvePromise => setTimeout(resolvePromise, ms));
}
