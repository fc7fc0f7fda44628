/**
 * An external worker for the queue's HTTP API, using only the global fetch():
 * fetch a task, do the work, ack it with the result (or the error), back off while the queue is
 * empty, and stop cleanly on Ctrl-C (the task in hand is finished and acked first).
 *
 *   API_URL=http://localhost:3000/api API_TOKEN=<jwt> SERVICE_ID=<uuid> WORKER_ID=worker-1 \
 *     npx tsx examples/http-worker.ts
 *
 * Optional: TIME_TO_RECOVER (lease seconds, default 60), WAIT_SECONDS (long-poll, 0-20).
 */
import os from "node:os";

export interface HttpWorkerOptions {
  /** Base URL of the API, e.g. http://localhost:3000/api */
  apiUrl: string;
  /** Bearer token (`npm run token -- --owner <id> --service <uuid>` mints one for development). */
  token: string;
  serviceId: string;
  workerId: string;
  /** Lease length in seconds. @defaultValue 60 */
  timeToRecover?: number;
  /** Long-poll: seconds the server may wait for a task before answering 204 (0-20). @defaultValue unset */
  waitSeconds?: number;
  /** Pause after an empty fetch, doubled up to `maxIdleMs` while the queue stays empty. @defaultValue 200 */
  minIdleMs?: number;
  /** @defaultValue 5000 */
  maxIdleMs?: number;
  /** Stop after this many tasks. @defaultValue unlimited */
  maxTasks?: number;
  /** Aborting stops the worker once the task in hand (if any) is acked. */
  signal?: AbortSignal;
  /** Called when a task is received, before the handler runs. */
  onDelivered?: (task: HttpTask) => void;
  /** Called when a task's ack was accepted. */
  onAcked?: (task: HttpTask) => void;
  /** Progress lines. @defaultValue silent */
  log?: (line: string) => void;
}

/** A task as the fetch route delivers it. */
export interface HttpTask {
  taskId: string;
  attempt: number;
  /** End of the lease, ms since the epoch. */
  leaseUntil: number;
  value: unknown;
}

/** Does the work of one task; its return value becomes the ack's `result`, a throw becomes its `error`. */
export type TaskHandler = (value: unknown, task: HttpTask) => unknown;

export interface WorkerSummary {
  /** Tasks acked with a result. */
  processed: number;
  /** Tasks acked with an error (the handler threw). */
  failed: number;
  /** Tasks whose lease ran out before the ack: another worker has them now. */
  leaseLost: number;
}

/** An error answer of the API: `{ type, message, data }` and the HTTP status. */
export class HttpApiError extends Error {
  override name = "HttpApiError";
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly data: unknown,
  ) {
    super(`${status} ${type}: ${message}`);
  }

  /** Retrying the same request may succeed (server busy, storage or queue ownership moving). */
  get transient(): boolean {
    return this.status >= 500 || this.status === 429;
  }
}

async function post(o: HttpWorkerOptions, operation: string, body: object, query = "", signal?: AbortSignal) {
  const url = `${o.apiUrl.replace(/\/+$/, "")}/queue/${encodeURIComponent(o.serviceId)}/${operation}${query}`;
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${o.token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (res.status >= 400) {
    const text = await res.text();
    let err: { type?: string; message?: string; data?: unknown } = {};
    try {
      err = JSON.parse(text) as typeof err;
    } catch {
      err = { message: text.slice(0, 200) };
    }
    throw new HttpApiError(res.status, err.type ?? "HTTP_ERROR", err.message ?? res.statusText, err.data);
  }
  return res;
}

/** Takes the next task (or the one this worker holds); null when the queue has nothing. */
export async function fetchTask(o: HttpWorkerOptions, signal?: AbortSignal): Promise<HttpTask | null> {
  const query = o.waitSeconds !== undefined ? `?wait=${o.waitSeconds}` : "";
  const res = await post(o, "fetch", { workerId: o.workerId, timeToRecover: o.timeToRecover ?? 60 }, query, signal);
  if (res.status === 204) return null;
  return {
    taskId: decodeURIComponent(res.headers.get("x-task-id") ?? ""),
    attempt: Number(res.headers.get("x-task-attempt")),
    leaseUntil: Number(res.headers.get("x-lease-until")),
    value: await res.json(),
  };
}

/** Acks `task`; "LEASE_LOST" / "NO_TASK" when the worker no longer holds it. */
export async function ackTask(
  o: HttpWorkerOptions,
  task: HttpTask,
  outcome: { result?: unknown; error?: unknown },
): Promise<"OK" | "LEASE_LOST" | "NO_TASK"> {
  try {
    await post(o, "ack", { workerId: o.workerId, taskId: task.taskId, ...outcome });
    return "OK";
  } catch (err) {
    if (err instanceof HttpApiError && err.status === 409) return err.type === "LEASE_LOST" ? "LEASE_LOST" : "NO_TASK";
    throw err;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

// By name, not instanceof: fetch() errors may come from another realm (DOMException, undici's TypeError).
const errorName = (err: unknown) => (err as { name?: unknown } | null)?.name;
const isAbort = (err: unknown) => errorName(err) === "AbortError";
/** fetch() rejects with a TypeError when the connection fails. */
const isNetworkError = (err: unknown) => errorName(err) === "TypeError";

/**
 * Fetches and processes tasks until `maxTasks` are done or `signal` aborts. Transient failures
 * (network, 5xx) are retried with backoff; a refused token or a bad request ends the loop with an error.
 */
export async function processTasks(o: HttpWorkerOptions, handle: TaskHandler): Promise<WorkerSummary> {
  const summary: WorkerSummary = { processed: 0, failed: 0, leaseLost: 0 };
  const minIdle = o.minIdleMs ?? 200;
  const maxIdle = o.maxIdleMs ?? 5000;
  const log = o.log ?? (() => undefined);
  let idle = minIdle;
  const backOff = async () => {
    await pause(idle, o.signal);
    idle = Math.min(idle * 2, maxIdle);
  };

  while (!o.signal?.aborted && summary.processed + summary.failed + summary.leaseLost < (o.maxTasks ?? Infinity)) {
    let task: HttpTask | null;
    try {
      task = await fetchTask(o, o.signal);
    } catch (err) {
      if (isAbort(err) || o.signal?.aborted) break;
      if (!isNetworkError(err) && !(err instanceof HttpApiError && err.transient)) throw err;
      log(`fetch failed (${(err as Error).message}); retrying in ${idle} ms`);
      await backOff();
      continue;
    }
    if (task === null) {
      await backOff();
      continue;
    }
    idle = minIdle;
    o.onDelivered?.(task);

    let outcome: { result?: unknown; error?: unknown };
    try {
      outcome = { result: await handle(task.value, task) };
    } catch (err) {
      outcome = { error: { message: err instanceof Error ? err.message : String(err) } };
    }
    const acked = await ackWithRetries(o, task, outcome, log);
    if (acked === "OK") {
      o.onAcked?.(task);
      if ("error" in outcome) summary.failed++;
      else summary.processed++;
    } else {
      summary.leaseLost++;
      log(`task ${task.taskId}: ${acked}, another worker has it now`);
    }
  }
  return summary;
}

/** An ack is retried through transient failures: the work is done, only its report is missing. */
async function ackWithRetries(
  o: HttpWorkerOptions,
  task: HttpTask,
  outcome: { result?: unknown; error?: unknown },
  log: (line: string) => void,
): Promise<"OK" | "LEASE_LOST" | "NO_TASK"> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ackTask(o, task, outcome);
    } catch (err) {
      const transient = isNetworkError(err) || (err instanceof HttpApiError && err.transient);
      if (!transient || attempt >= 5 || Date.now() > task.leaseUntil) throw err;
      log(`ack of ${task.taskId} failed (${(err as Error).message}); retrying`);
      await pause(100 * 2 ** attempt);
    }
  }
}

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set. Set API_URL, API_TOKEN, SERVICE_ID (and WORKER_ID), then run again.`);
    process.exit(2);
  }
  return value;
}

async function main(): Promise<void> {
  const controller = new AbortController();
  const stop = (signal: string) => {
    console.log(`\n${signal}: finishing the current task, then stopping (press Ctrl-C again to quit at once)`);
    controller.abort();
    process.once("SIGINT", () => process.exit(130));
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));

  const options: HttpWorkerOptions = {
    apiUrl: process.env.API_URL ?? "http://localhost:3000/api",
    token: requiredEnv("API_TOKEN"),
    serviceId: requiredEnv("SERVICE_ID"),
    workerId: process.env.WORKER_ID || `${os.hostname()}-${process.pid}`,
    timeToRecover: process.env.TIME_TO_RECOVER ? Number(process.env.TIME_TO_RECOVER) : undefined,
    waitSeconds: process.env.WAIT_SECONDS ? Number(process.env.WAIT_SECONDS) : undefined,
    signal: controller.signal,
    log: line => console.log(line),
  };
  console.log(`worker ${options.workerId} pulling from ${options.apiUrl} (queue ${options.serviceId}); Ctrl-C stops`);
  const summary = await processTasks(options, (value, task) => {
    // The work: here, echo the value back as the result.
    console.log(`task ${task.taskId} (attempt ${task.attempt}): ${JSON.stringify(value).slice(0, 120)}`);
    return { echoed: value, by: options.workerId };
  });
  console.log(
    `stopped: ${summary.processed} done, ${summary.failed} failed, ${summary.leaseLost} lost to an expired lease`,
  );
}

if (require.main === module) {
  main().catch(err => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
