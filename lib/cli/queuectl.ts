/**
 * `queuectl`: the operator's command line, over the gateway's HTTP API (what `rabbitmqctl
 * list_queues` gives RabbitMQ users). Every command prints a readable table, or with `--json` the
 * API's answer as it came. The gateway's address comes from `--url` or QUEUE_API_URL, the bearer
 * token from `--token` or QUEUE_API_TOKEN; `token` mints one with API_JWT_SECRET.
 *
 *   queuectl queues                       queuectl stats <serviceId>
 *   queuectl tasks <serviceId> [--state waiting|delayed|leased|handing-over|dead] [--offset n] [--limit n]
 *   queuectl dead <serviceId> [--limit n] queuectl redrive <serviceId> [--task <taskId> ...]
 *   queuectl purge <serviceId> --yes      queuectl add <serviceId> <json> [--task-id id] [--delay s]
 *   queuectl token --owner <ownerId> --service <serviceId|*> [--ttl seconds] [--ops]
 */
import { parseArgs } from "node:util";
import { mintAccessToken } from "../http/access-token";

export const USAGE = `usage: queuectl <command> [arguments] [--url <gateway>] [--token <bearer token>] [--json]

commands:
  queues                          the token owner's queues with their counters
  stats <serviceId>               one queue's counters and the workers holding tasks
  tasks <serviceId>               live tasks, oldest first [--state <state>] [--offset <n>] [--limit <n>]
  dead <serviceId>                the dead-letter list [--limit <n>]
  redrive <serviceId>             dead tasks back to the queue [--task <taskId> ...] (all when none)
  purge <serviceId> --yes         remove waiting, delayed and dead tasks
  add <serviceId> <json value>    enqueue a task [--task-id <id>] [--delay <seconds>]
  token --owner <id> --service <serviceId|*> [--ttl <seconds>] [--ops]   mint a token (API_JWT_SECRET); --ops: operator

environment: QUEUE_API_URL (default http://localhost:3000), QUEUE_API_TOKEN, API_JWT_SECRET`;

export interface CliIo {
  env: NodeJS.ProcessEnv;
  out(text: string): void;
  err(text: string): void;
  fetch: typeof fetch;
}

/** A refusal of the command line itself (exit code 2), before anything is sent. */
class UsageError extends Error {}

/** An error answer of the API (exit code 1): its type and message, as the API gave them. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

type Row = Record<string, unknown>;

/** A plain text table: a header line, then one line per row, columns padded to their widths. */
export function table(rows: Row[], columns: [key: string, title: string][]): string {
  if (rows.length === 0) return "(none)";
  const cells = rows.map(r => columns.map(([key]) => cell(r[key])));
  const widths = columns.map(([, title], i) => Math.max(title.length, ...cells.map(c => c[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [line(columns.map(([, title]) => title)), ...cells.map(line)].join("\n");
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

const time = (ms: unknown): string => (typeof ms === "number" && ms > 0 ? new Date(ms).toISOString() : "");
const age = (ms: unknown): string => (typeof ms === "number" && ms > 0 ? `${(ms / 1000).toFixed(1)} s` : "");

function integer(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number, not ${raw}`);
  return n;
}

/** Runs one command; resolves to the process's exit code (0 done, 1 refused by the API, 2 bad usage). */
export async function runQueuectl(argv: string[], io: CliIo): Promise<number> {
  try {
    await run(argv, io);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof ApiError) {
      io.err(`${err.type} (${err.status}): ${err.message}`);
      return 1;
    }
    io.err((err as Error).message);
    return 1;
  }
}

async function run(argv: string[], io: CliIo): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: "string" },
        token: { type: "string" },
        json: { type: "boolean" },
        state: { type: "string" },
        offset: { type: "string" },
        limit: { type: "string" },
        task: { type: "string", multiple: true },
        "task-id": { type: "string" },
        delay: { type: "string" },
        yes: { type: "boolean" },
        owner: { type: "string" },
        service: { type: "string", multiple: true },
        ttl: { type: "string" },
        ops: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const [command, serviceId, ...rest] = positionals;
  if (values.help || command === "help") {
    io.out(USAGE);
    return;
  }
  if (!command) throw new UsageError("a command is required");

  if (command === "token") {
    const secret = io.env.API_JWT_SECRET;
    if (!secret) throw new UsageError("API_JWT_SECRET is not set: export the secret the gateway verifies tokens with");
    if (!values.owner) throw new UsageError("--owner is required");
    const services = values.service ?? [];
    if (services.length === 0) throw new UsageError("--service is required (a serviceId, or '*' for all)");
    const ttl = integer("ttl", values.ttl) ?? 86_400;
    if (ttl === 0) throw new UsageError("--ttl must be a positive number of seconds");
    const token = await mintAccessToken({
      secret,
      ownerId: values.owner,
      services: services.includes("*") ? "*" : services,
      expiresInSeconds: ttl,
      issuer: io.env.API_JWT_ISSUER || undefined,
      audience: io.env.API_JWT_AUDIENCE || undefined,
      ops: values.ops === true,
    });
    io.out(token);
    return;
  }

  const base = (values.url ?? io.env.QUEUE_API_URL ?? "http://localhost:3000").replace(/\/+$/, "");
  const token = values.token ?? io.env.QUEUE_API_TOKEN;
  if (!token) throw new UsageError("a token is required: --token <token> or QUEUE_API_TOKEN (see `queuectl token`)");
  const call = async (method: "GET" | "POST", path: string, body?: unknown): Promise<unknown> => {
    let res: Response;
    try {
      res = await io.fetch(`${base}/api${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`the gateway at ${base} did not answer: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = (json ?? {}) as { type?: string; message?: string };
      throw new ApiError(res.status, e.type ?? "HTTP_ERROR", e.message ?? (text || res.statusText));
    }
    return json;
  };
  const queue = (): string => {
    if (!serviceId) throw new UsageError(`${command} needs the queue's serviceId`);
    return encodeURIComponent(serviceId);
  };
  const print = (answer: unknown, readable: () => string) =>
    io.out(values.json ? JSON.stringify(answer, null, 2) : readable());

  switch (command) {
    case "queues": {
      const answer = (await call("GET", "/queues")) as { queues: { serviceId: string; seenAt: number; stats?: Row }[] };
      const rows = answer.queues.map(q => ({
        serviceId: q.serviceId,
        ...(q.stats ?? {}),
        workers: Array.isArray(q.stats?.["workers"]) ? (q.stats["workers"] as unknown[]).length : "",
        oldest: age(q.stats?.["oldestWaitingMs"]),
      }));
      return print(answer, () =>
        table(rows, [
          ["serviceId", "QUEUE"],
          ["ready", "READY"],
          ["delayed", "DELAYED"],
          ["inFlight", "IN FLIGHT"],
          ["dead", "DEAD"],
          ["handingOver", "HANDING OVER"],
          ["workers", "WORKERS"],
          ["oldest", "OLDEST WAITING"],
        ]),
      );
    }
    case "stats": {
      const s = (await call("GET", `/queue/${queue()}/stats`)) as Row & { workers?: Row[]; completedPer10s?: number[] };
      return print(s, () => {
        const counters = table(
          [
            { k: "ready", v: s["ready"] },
            { k: "delayed", v: s["delayed"] },
            { k: "in flight", v: s["inFlight"] },
            { k: "dead", v: s["dead"] },
            { k: "handing over", v: s["handingOver"] },
            { k: "oldest waiting", v: age(s["oldestWaitingMs"]) },
            { k: "completed, last 5 min", v: (s.completedPer10s ?? []).reduce((a, b) => a + b, 0) },
          ],
          [
            ["k", "COUNTER"],
            ["v", "VALUE"],
          ],
        );
        const workers = table(
          (s.workers ?? []).map(w => ({ ...w, leaseUntil: time(w["leaseUntil"]) })),
          [
            ["workerId", "WORKER"],
            ["taskId", "TASK"],
            ["attempt", "ATTEMPT"],
            ["leaseUntil", "LEASE UNTIL"],
          ],
        );
        return `${counters}\n\nworkers holding a task:\n${workers}`;
      });
    }
    case "tasks": {
      const q = new URLSearchParams();
      if (values.state) q.set("state", values.state);
      const offset = integer("offset", values.offset);
      const limit = integer("limit", values.limit);
      if (offset !== undefined) q.set("offset", String(offset));
      if (limit !== undefined) q.set("limit", String(limit));
      const query = q.size > 0 ? `?${q}` : "";
      const answer = (await call("GET", `/queue/${queue()}/tasks${query}`)) as { total: number; tasks: Row[] };
      return print(answer, () => {
        const rows = answer.tasks.map(t => ({
          ...t,
          leaseUntil: time(t["leaseUntil"]),
          expiresAt: time(t["expiresAt"]),
        }));
        const shown = table(rows, [
          ["taskId", "TASK"],
          ["state", "STATE"],
          ["attempt", "ATTEMPT"],
          ["worker", "WORKER"],
          ["leaseUntil", "LEASE UNTIL"],
          ["expiresAt", "EXPIRES"],
        ]);
        return `${shown}\n${answer.tasks.length} of ${answer.total}`;
      });
    }
    case "dead": {
      const limit = integer("limit", values.limit);
      const answer = (await call("GET", `/queue/${queue()}/dead${limit === undefined ? "" : `?limit=${limit}`}`)) as {
        tasks: Row[];
      };
      return print(answer, () =>
        table(
          answer.tasks.map(t => ({ ...t, expiresAt: time(t["expiresAt"]) })),
          [
            ["taskId", "TASK"],
            ["attempt", "ATTEMPTS"],
            ["reason", "REASON"],
            ["error", "LAST ERROR"],
            ["expiresAt", "EXPIRES"],
          ],
        ),
      );
    }
    case "redrive": {
      const answer = (await call("POST", `/queue/${queue()}/redrive`, values.task ? { taskIds: values.task } : {})) as {
        redriven: number;
      };
      return print(answer, () => `${answer.redriven} dead task(s) back in the queue`);
    }
    case "purge": {
      const id = queue();
      if (!values.yes) throw new UsageError("purge removes every waiting, delayed and dead task: add --yes to do it");
      const answer = (await call("POST", `/queue/${id}/purge`, { confirm: serviceId })) as { purged: number };
      return print(answer, () => `${answer.purged} task(s) purged`);
    }
    case "add": {
      const id = queue();
      const raw = rest[0];
      if (raw === undefined) throw new UsageError('add needs a JSON value, e.g. \'{"msg":"hello"}\'');
      let value: unknown;
      try {
        value = JSON.parse(raw);
      } catch {
        throw new UsageError(`the value is not JSON: ${raw}`);
      }
      const delay = integer("delay", values.delay);
      const body = { value, ...(values["task-id"] ? { taskId: values["task-id"] } : {}), ...(delay ? { delay } : {}) };
      const answer = await call("POST", `/queue/${id}/add`, body);
      return print(answer, () => "added");
    }
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}
