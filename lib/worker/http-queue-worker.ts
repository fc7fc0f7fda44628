/**
 * Workers outside the Moleculer cluster: HttpQueueClient speaks the gateway's routes
 * (`POST <baseUrl>/api/queue/<serviceId>/{fetch,ack,update,release,add}` with a bearer token), and
 * HttpQueueWorker runs the worker loop over it: long polls, heartbeats, acks, releases, backoff
 * with jitter while the gateway is unreachable or answers 5xx. A refused token (401, 403) stops the
 * worker with one `error` event instead of a retry storm. Uses only the global fetch() (keep-alive),
 * no Moleculer.
 *
 *   const worker = new HttpQueueWorker(
 *     { baseUrl: "http://queue-gateway:3000", token, serviceId, concurrency: 4 },
 *     async (value, task) => ({ done: true }),
 *   );
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { HttpApiError } from "./http-api-error";
import { PullWorker, type TaskHandler } from "./pull-worker";
import type { DeliveredTask, FailureKind, LeaseOutcome, TaskTransport } from "./task-transport";
import { WorkerStoppedError } from "./worker-errors";
import type { WorkerOptions } from "./worker-options";

export interface HttpQueueClientOptions {
  /** The gateway's address, e.g. http://localhost:3000 */
  baseUrl: string;
  /** The gateway's route prefix. @defaultValue "/api" */
  basePath?: string;
  /** The bearer token: its owner is the queue's owner, and it must list the serviceId (or "*"). */
  token: string;
  /** The queue (a uuid). */
  serviceId: string;
  /** Timeout of each request in ms; a fetch gets its `wait` on top. @defaultValue 10000 */
  callTimeout?: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

export interface HttpQueueWorkerOptions extends WorkerOptions, HttpQueueClientOptions {}

/** What `add` takes besides the value: the add route's optional fields. */
export interface HttpAddOptions {
  taskId?: string;
  token?: object;
  delay?: number;
  notBefore?: number;
  maxAttempts?: number;
}

/** The gateway's queue routes for one queue. Errors are HttpApiError, or fetch()'s own for the network. */
export class HttpQueueClient implements TaskTransport {
  readonly serviceId: string;
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly callTimeout: number;

  constructor(options: HttpQueueClientOptions) {
    if (!options.baseUrl) throw new TypeError("HttpQueueClient option baseUrl is required, e.g. http://localhost:3000");
    if (!options.token) throw new TypeError("HttpQueueClient option token is required: a bearer token for the gateway");
    const basePath = (options.basePath ?? "/api").replace(/\/+$/, "");
    this.serviceId = options.serviceId;
    this.base = `${options.baseUrl.replace(/\/+$/, "")}${basePath}/queue/${encodeURIComponent(options.serviceId)}`;
    this.headers = {
      ...options.headers,
      authorization: `Bearer ${options.token}`,
      "content-type": "application/json",
      accept: "application/json",
    };
    this.callTimeout = options.callTimeout ?? 10_000;
  }

  /** Adds a task. */
  async add(value: unknown, options: HttpAddOptions = {}): Promise<void> {
    await drain(await this.post("add", { value, ...options }));
  }

  async fetch(workerId: string, timeToRecover: number, wait: number): Promise<DeliveredTask | null> {
    const query = wait > 0 ? `?wait=${wait}` : "";
    const res = await this.post("fetch", { workerId, timeToRecover }, query, wait * 1000 + this.callTimeout);
    return taskOf(res);
  }

  async ack(workerId: string, taskId: string, result: unknown): Promise<LeaseOutcome> {
    return this.leaseCall("ack", { workerId, taskId, result });
  }

  /** `ack?next=1`: the ack's outcome in X-Ack, the next task as fetch answers it. */
  async ackThenFetch(
    workerId: string,
    taskId: string,
    result: unknown,
    timeToRecover: number,
  ): Promise<{ outcome: LeaseOutcome; next?: DeliveredTask | null }> {
    let res: Response;
    try {
      res = await this.post("ack", { workerId, taskId, result, timeToRecover }, "?next=1");
    } catch (err) {
      // A gateway without ?next refuses a lost ack with 409, as for a plain ack.
      if (err instanceof HttpApiError && err.status === 409) {
        return { outcome: refused(err.type) };
      }
      throw err;
    }
    const ack = res.headers.get("x-ack");
    if (ack === null) {
      // A gateway without ?next acked (200 {"ok":true}) and fetched nothing.
      await drain(res);
      return { outcome: { ok: true } };
    }
    return { outcome: ack === "ok" ? { ok: true } : refused(ack), next: await taskOf(res) };
  }

  async update(workerId: string, taskId: string, progress?: unknown): Promise<LeaseOutcome> {
    return this.leaseCall("update", { workerId, taskId, progress });
  }

  async release(workerId: string, taskId: string, delay: number, error?: unknown): Promise<boolean> {
    const outcome = await this.leaseCall("release", { workerId, taskId, delay, error });
    return outcome.ok;
  }

  /** Network failures, timeouts, 5xx, 408 and 429 are transient; 401 and 403 deny the worker; other 4xx reject the request. */
  classify(err: unknown): FailureKind {
    if (!(err instanceof HttpApiError)) return "transient";
    if (err.transient) return "transient";
    return err.status === 401 || err.status === 403 ? "denied" : "rejected";
  }

  retryAfterMs(err: unknown): number | undefined {
    return err instanceof HttpApiError && err.retryAfterSeconds !== undefined
      ? err.retryAfterSeconds * 1000
      : undefined;
  }

  explainStop(err: unknown): Error {
    if (!(err instanceof HttpApiError)) {
      return new WorkerStoppedError(`The worker stopped: ${String(err)}`, "ERROR", undefined, err);
    }
    const hint =
      err.status === 401
        ? "the gateway refused the worker's token; start the worker with a valid, unexpired token"
        : err.status === 403
          ? `the token does not allow queue ${this.serviceId}; use a token of this queue's owner whose services list it`
          : err.status === 404
            ? "no such route; check baseUrl and basePath (the gateway serves <baseUrl>/api/queue/...)"
            : "the gateway rejected the worker's request; check the worker's options";
    return new WorkerStoppedError(`${hint} (${err.message}). The worker stopped.`, err.type, err.status, err);
  }

  /** ack, update, release: 409 says the worker no longer holds the task. */
  private async leaseCall(operation: string, body: object): Promise<LeaseOutcome> {
    let res: Response;
    try {
      res = await this.post(operation, body);
    } catch (err) {
      if (err instanceof HttpApiError && err.status === 409) {
        return refused(err.type);
      }
      throw err;
    }
    const answer = (await res.json()) as { leaseUntil?: unknown; cancelled?: unknown };
    return {
      ok: true,
      leaseUntil: typeof answer.leaseUntil === "number" ? answer.leaseUntil : undefined,
      cancelled: answer.cancelled === true,
    };
  }

  private async post(operation: string, body: object, query = "", timeout = this.callTimeout): Promise<Response> {
    // A plain timer rather than AbortSignal.timeout(): measured, the latter halved this worker's
    // throughput against the same loop without it (bench/worker.bench.ts). The timer covers the
    // request up to the response headers; the bodies that follow are small.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no answer from ${operation} within ${timeout} ms`)), timeout);
    let res: Response;
    try {
      res = await fetch(`${this.base}/${operation}${query}`, {
        method: "POST",
        headers: this.headers,
        body: JSON.stringify(body),
        signal: abort.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    if (res.status >= 400) throw await HttpApiError.from(res);
    return res;
  }
}

export class HttpQueueWorker<TValue = any, TResult = unknown> extends PullWorker<TValue, TResult> {
  constructor(options: HttpQueueWorkerOptions, handler: TaskHandler<TValue, TResult>) {
    super(new HttpQueueClient(options), options, handler, {
      workerId: `${os.hostname().slice(0, 64)}-${process.pid}-${randomBytes(3).toString("hex")}`,
      logger: console,
    });
  }
}

/** Why the worker no longer holds its task, from the gateway's 409 type or X-Ack. */
function refused(reason: string): LeaseOutcome {
  return { ok: false, reason: reason === "LEASE_LOST" ? "LEASE_LOST" : "NO_TASK" };
}

/** A fetch-shaped answer: 204 for none, else the value as the body and the task in headers. */
async function taskOf(res: Response): Promise<DeliveredTask | null> {
  if (res.status === 204) {
    await drain(res);
    return null;
  }
  return {
    taskId: decodeURIComponent(res.headers.get("x-task-id") ?? ""),
    attempt: Number(res.headers.get("x-task-attempt")),
    leaseUntil: Number(res.headers.get("x-lease-until")),
    cancelled: res.headers.get("x-task-cancelled") === "true",
    value: await res.json(),
  };
}

/** Reads a body to its end, so that the keep-alive connection can be reused. */
async function drain(res: Response): Promise<void> {
  await res.arrayBuffer().catch(() => undefined);
}
