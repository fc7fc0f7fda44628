/**
 * Queue nodes as real OS processes (test/fixtures/queue-node.ts), for failure tests: start N of
 * them in one namespace, wait for their READY line, then SIGKILL, SIGSTOP / SIGCONT or stop them.
 *
 * Each node is ONE process: Node runs the fixture with `--import tsx` (the tsx CLI would put a
 * second process in between, and a SIGKILL or SIGSTOP of the CLI would not reach the broker).
 * Every process started here is remembered; `killAllQueueNodes()` (call it in afterAll) SIGKILLs
 * whatever is left, and a process "exit" hook does the same if a test run ends without it. The
 * nodes also exit by themselves when their stdin (a pipe from this process) closes.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const ROOT = resolve(__dirname, "..", "..");
const FIXTURE = join(ROOT, "test", "fixtures", "queue-node.ts");
const OUTPUT_KEPT = 400;

export type NodeState = "starting" | "running" | "paused" | "killed" | "exited";

export interface StartOptions {
  /** Moleculer namespace shared by the nodes (and by the test's client broker). */
  namespace: string;
  /** Keyspace of the queue tables. */
  keyspace: string;
  /** Node ids; default `${prefix}-1..n`. */
  nodeIds?: string[];
  /** @defaultValue "nats://127.0.0.1:4222" */
  transporter?: string;
  /** Extra environment for the nodes. */
  env?: NodeJS.ProcessEnv;
  /** @defaultValue 60000 */
  readyTimeoutMs?: number;
}

export class QueueNodeProcess {
  state: NodeState = "starting";
  private readonly lines: string[] = [];
  private partial = { stdout: "", stderr: "" };
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly ready: Promise<void>;

  constructor(
    readonly nodeID: string,
    readonly child: ChildProcess,
    readyTimeoutMs: number,
  ) {
    this.exited = new Promise(resolvePromise => {
      child.on("exit", (code, signal) => {
        if (this.state !== "killed") this.state = "exited";
        live.delete(this);
        this.stopWatchdog();
        resolvePromise({ code, signal });
      });
    });
    this.ready = new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`node ${nodeID} not READY within ${readyTimeoutMs} ms; output:\n${this.output(40)}`));
      }, readyTimeoutMs);
      const onLine = (stream: "stdout" | "stderr", line: string) => {
        this.lines.push(`[${stream}] ${line}`);
        if (this.lines.length > OUTPUT_KEPT) this.lines.splice(0, this.lines.length - OUTPUT_KEPT);
        if (stream === "stdout" && line.trim() === `READY ${nodeID}`) {
          clearTimeout(timer);
          if (this.state === "starting") this.state = "running";
          resolvePromise();
        }
      };
      for (const stream of ["stdout", "stderr"] as const) {
        child[stream]?.on("data", (chunk: Buffer) => {
          const text = this.partial[stream] + chunk.toString("utf8");
          const parts = text.split("\n");
          this.partial[stream] = parts.pop() ?? "";
          for (const line of parts) onLine(stream, line);
        });
      }
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(
          new Error(`node ${nodeID} exited (${signal ?? `code ${code}`}) before READY; output:\n${this.output(40)}`),
        );
      });
    });
    // The rejection is observed by whoever awaits waitReady(); do not let it go unhandled meanwhile.
    this.ready.catch(() => undefined);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** True while the process can answer (started and neither paused, killed nor exited). */
  get running(): boolean {
    return this.state === "running";
  }

  waitReady(): Promise<void> {
    return this.ready;
  }

  /** The last `n` lines of its stdout and stderr. */
  output(n = OUTPUT_KEPT): string {
    return this.lines.slice(-n).join("\n");
  }

  /** Whether any output line matches. */
  printed(pattern: RegExp): boolean {
    return this.lines.some(l => pattern.test(l));
  }

  /** kill -9: the node dies at once, without releasing anything. */
  async kill9(): Promise<void> {
    if (this.state === "killed" || this.state === "exited") return;
    this.state = "killed";
    this.child.kill("SIGKILL");
    await this.exited;
  }

  /**
   * SIGSTOP: the process freezes (timers, sockets, everything) until resume(). A frozen node cannot
   * notice that this process died, so a small detached watchdog SIGKILLs it if this process goes
   * away while it is frozen.
   */
  pause(): void {
    if (this.state !== "running") throw new Error(`cannot pause ${this.nodeID} in state ${this.state}`);
    this.watchdog = spawn(
      "sh",
      ["-c", `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 ${this.pid} 2>/dev/null`],
      { detached: true, stdio: "ignore" },
    );
    this.watchdog.unref();
    this.child.kill("SIGSTOP");
    this.state = "paused";
  }

  /** SIGCONT after pause(). */
  resume(): void {
    if (this.state !== "paused") throw new Error(`cannot resume ${this.nodeID} in state ${this.state}`);
    this.child.kill("SIGCONT");
    this.state = "running";
    this.stopWatchdog();
  }

  private watchdog?: ChildProcess;

  private stopWatchdog(): void {
    if (this.watchdog && this.watchdog.exitCode === null) this.watchdog.kill("SIGKILL");
    this.watchdog = undefined;
  }

  /** SIGTERM (graceful stop: the node releases its queues), SIGKILL if it has not exited in time. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.state === "killed" || this.state === "exited") return;
    if (this.state === "paused") this.child.kill("SIGCONT");
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Every node process started by this module and not yet gone. */
const live = new Set<QueueNodeProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const node of live) {
      try {
        node.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

/** A fresh namespace so that concurrent test files (and reruns) never see each other's nodes. */
export function uniqueNamespace(prefix: string): string {
  return `${prefix}-${randomBytes(5).toString("hex")}`;
}

/** Spawns one node (see StartOptions); resolves when the process is spawned, not yet READY. */
export function spawnQueueNode(nodeID: string, o: StartOptions): QueueNodeProcess {
  installExitHook();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...o.env,
    NODEID: nodeID,
    NAMESPACE: o.namespace,
    TRANSPORTER: o.transporter ?? "nats://127.0.0.1:4222",
    QUEUE_KEYSPACE: o.keyspace,
    QUEUE_NODE_WATCH_STDIN: "1",
  };
  // Jest's own worker variables would make the node think it runs under jest.
  delete env.JEST_WORKER_ID;
  const loader = pathToFileURL(require.resolve("tsx")).href;
  // process.execPath is the Node that runs jest: the project's pinned Node when run through npx / npm.
  const child = spawn(process.execPath, ["--import", loader, FIXTURE], {
    cwd: ROOT,
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const node = new QueueNodeProcess(nodeID, child, o.readyTimeoutMs ?? 60_000);
  live.add(node);
  return node;
}

/** Spawns the nodes in parallel and waits until every one printed READY (killing all if one fails). */
export async function startQueueNodes(n: number, o: StartOptions & { prefix?: string }): Promise<QueueNodeProcess[]> {
  const ids = o.nodeIds ?? Array.from({ length: n }, (_, i) => `${o.prefix ?? "qn"}-${i + 1}`);
  const nodes = ids.map(id => spawnQueueNode(id, o));
  try {
    await Promise.all(nodes.map(node => node.waitReady()));
  } catch (err) {
    await Promise.all(nodes.map(node => node.kill9()));
    throw err;
  }
  return nodes;
}

/** SIGKILLs every node process still alive (paused ones included) and waits until they are gone. */
export async function killAllQueueNodes(): Promise<void> {
  await Promise.all([...live].map(node => node.kill9()));
}

/** Pids of node processes still alive, for a leftover check. */
export function liveQueueNodePids(): number[] {
  return [...live].map(n => n.pid);
}
