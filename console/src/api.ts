/**
 * The gateway's console routes, called with the signed-in bearer token. Every failure becomes an
 * ApiError carrying the API's `type` and `message` (or a NETWORK_ERROR when there is no answer).
 */

export interface WorkerLease {
  workerId: string;
  taskId: string;
  leaseUntil: number;
  attempt: number;
}

export interface QueueStats {
  ready: number;
  delayed: number;
  inFlight: number;
  dead: number;
  handingOver: number;
  oldestWaitingMs: number;
  workers: WorkerLease[];
  /** Completions per 10-second slot over the last 5 minutes, oldest first. */
  completedPer10s: number[];
}

export interface QueueSummary {
  serviceId: string;
  seenAt: number;
  stats: QueueStats;
}

export type TaskState = "waiting" | "delayed" | "leased" | "handing-over" | "dead" | "done" | "cancelled" | "unknown";

export interface TaskStatus {
  taskId: string;
  state: TaskState;
  attempt?: number;
  maxAttempts?: number;
  worker?: string;
  leaseUntil?: number;
  notBefore?: number;
  cancelled?: boolean;
  reason?: string;
  expiresAt?: number;
}

export interface TaskDetails extends TaskStatus {
  value?: unknown;
  progress?: unknown;
  error?: unknown;
}

export interface TaskPage {
  total: number;
  tasks: TaskStatus[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly data: unknown = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** No answer, a server fault or an overload: the same request may work later. */
  get transient(): boolean {
    return this.status === 0 || this.status >= 500 || this.status === 408 || this.status === 429;
  }

  /** The token is missing, invalid or expired: signing in again is the only way on. */
  get unauthenticated(): boolean {
    return this.status === 401;
  }
}

/** The API lives next to the console: `/console/` → `/api/`. */
const apiBase = new URL("../api/", window.location.href);

async function call<T>(token: string, method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(new URL(path, apiBase), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "NETWORK_ERROR", `The gateway did not answer (${(err as Error).message})`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const e = (json ?? {}) as { type?: unknown; message?: unknown; data?: unknown };
    throw new ApiError(
      res.status,
      typeof e.type === "string" ? e.type : `HTTP_${res.status}`,
      typeof e.message === "string" ? e.message : res.statusText || "The request failed",
      e.data,
    );
  }
  return json as T;
}

const q = (serviceId: string) => `queue/${encodeURIComponent(serviceId)}`;

export const api = {
  queues: (token: string) => call<{ queues: QueueSummary[] }>(token, "GET", "queues"),
  stats: (token: string, serviceId: string) => call<QueueStats>(token, "GET", `${q(serviceId)}/stats`),
  tasks(token: string, serviceId: string, page: { state?: string; offset: number; limit: number }) {
    const query = new URLSearchParams({ offset: String(page.offset), limit: String(page.limit) });
    if (page.state) query.set("state", page.state);
    return call<TaskPage>(token, "GET", `${q(serviceId)}/tasks?${query.toString()}`);
  },
  inspect: (token: string, serviceId: string, taskId: string) =>
    call<TaskDetails>(token, "GET", `${q(serviceId)}/tasks/${encodeURIComponent(taskId)}`),
  redrive: (token: string, serviceId: string, taskIds?: string[]) =>
    call<{ redriven: number }>(token, "POST", `${q(serviceId)}/redrive`, taskIds ? { taskIds } : {}),
  cancel: (token: string, serviceId: string, taskId: string) =>
    call<{ ok: boolean; state: TaskState; taskId: string }>(token, "POST", `${q(serviceId)}/cancel`, { taskId }),
  purge: (token: string, serviceId: string, confirm: string) =>
    call<{ purged: number }>(token, "POST", `${q(serviceId)}/purge`, { confirm }),
};

/** What a JWT says about itself, for display only (the gateway does the verifying). */
export function tokenClaims(token: string): { sub?: string; services?: unknown; exp?: number } | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const binary = atob(
      part
        .replace(/-/g, "+")
        .replace(/_/g, "/")
        .padEnd(Math.ceil(part.length / 4) * 4, "="),
    );
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, c => c.charCodeAt(0)))) as unknown;
    return typeof claims === "object" && claims !== null ? (claims as { sub?: string }) : undefined;
  } catch {
    return undefined;
  }
}
