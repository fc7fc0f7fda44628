/**
 * The HTTP gateway (moleculer-web): for external workers `POST /api/queue/:serviceId/{fetch,ack,add,update,release}`;
 * for the operator console `GET /api/queues`, `GET /api/queue/:serviceId/{stats,tasks,tasks/:taskId,dead}` and
 * `POST /api/queue/:serviceId/{redrive,cancel,purge}`; the console's page itself under `/console`; and
 * `GET /api/openapi.json`. Every queue request is authenticated by its bearer token first; the
 * token's owner becomes the owner of the queue call (never an owner named in the request). The
 * handlers only translate between HTTP and the queue actions; the queue does the rest.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  Errors,
  type Context,
  type Service,
  type ServiceBroker,
  type ServiceSchema,
  type ServiceSettingSchema,
} from "moleculer";
import ApiGateway from "moleculer-web";
import {
  AuthenticationRequiredError,
  AuthUnavailableError,
  BodyTooLargeError,
  InvalidTokenError,
  LeaseLostError,
  MalformedJsonError,
  NoTaskError,
  OwnerNotAllowedError,
  QueueUnavailableError,
  ServiceNotAllowedError,
  TokenExpiredError,
  UnreadableBodyError,
} from "../lib/errors";
import {
  createJwtVerifier,
  grantCovers,
  grantFromClaims,
  jwtOptionsFromEnv,
  type AccessGrant,
  type JwtVerifierOptions,
  type TokenVerifier,
} from "../lib/http/access-token";
import { consoleAssets, defaultConsoleFolders, TaskNotFoundError } from "../lib/http/console";
import { queueApiDocument } from "../lib/http/openapi";
import { aclGuardOf } from "../middleware/acl.middleware";

const { MoleculerError, ValidationError } = Errors;

export interface ApiServiceOptions {
  /** @defaultValue "api" */
  name?: string;
  /** Port to listen on; 0 picks a free one (read it from `settings.port` once started). @defaultValue PORT or 3000 */
  port?: number;
  /** Address to bind. @defaultValue IP or "0.0.0.0" */
  ip?: string;
  /** The queue service the routes call. @defaultValue "worker.queue" */
  queueService?: string;
  /** Prefix of every route. @defaultValue "/api" */
  basePath?: string;
  /** Largest accepted request body, in bytes. @defaultValue 1 MiB */
  bodyLimit?: number;
  /**
   * JWT verification (HS256 secret, or RS256 / ES256 public key). Ignored when `authAction` is set.
   * @defaultValue jwtOptionsFromEnv(): API_JWT_SECRET, API_JWT_PUBLIC_KEY, API_JWT_ISSUER, API_JWT_AUDIENCE
   */
  jwt?: JwtVerifierOptions;
  /**
   * Delegates verification to this action: called with `{ token }`, it returns `{ ownerId, services }`
   * or throws (a 4xx error: the token is refused; anything else: 503, retry).
   * @defaultValue API_AUTH_ACTION, else unset (JWT)
   */
  authAction?: string;
  /**
   * The built operator console (`npm run build:console`), served at `consolePath`; `false` serves none.
   * @defaultValue the package's `dist-console/`
   */
  consoleFolder?: string | false;
  /** Where the console is served. @defaultValue "/console" */
  consolePath?: string;
  /**
   * Origins whose pages may call the API from a browser (CORS), or `["*"]` for any. Off when empty.
   * @defaultValue API_CORS_ORIGINS (comma-separated), else none
   */
  corsOrigins?: string[];
}

/** Headers of every answer of the gateway's routes (the console's files set a fuller policy). */
const SECURITY_HEADERS: Record<string, string> = {
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
  "X-Frame-Options": "DENY",
};

function securityHeaders(_req: IncomingMessage, res: ServerResponse, next: Next): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
  next();
}

/** A CORS preflight: answered by moleculer-web's CORS handling, before any token is asked for. */
const isPreflight = (req: IncomingMessage): boolean =>
  req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;

/** Longest `?wait=` accepted on fetch, in seconds. */
export const MAX_WAIT_SECONDS = 20;
/** Extra time a long-polling fetch call gets beyond its wait before it times out. */
const WAIT_TIMEOUT_MARGIN_MS = 10_000;

type Operation = "fetch" | "ack" | "add" | "update" | "release";

/** What the operator console reads and does (each its own route). */
type ConsoleOperation = "queues" | "stats" | "tasks" | "inspect" | "dead" | "redrive" | "cancel" | "purge";

/** The request as moleculer-web hands it to middlewares and alias handlers. */
interface ApiRequest extends IncomingMessage {
  $ctx: Context<unknown, Record<string, unknown>>;
  $params: { body?: unknown; query?: Record<string, unknown>; params?: Record<string, string> };
  /** Set by the authentication middleware. */
  $grant?: AccessGrant;
  /** The verified bearer token, passed on to the queue as the call's grant (JWT verification only). */
  $grantToken?: string;
  body?: unknown;
}

type Next = (err?: unknown) => void;

export interface ApiSettings extends ServiceSettingSchema {
  queueService: string;
  authAction?: string;
  bodyLimit: number;
  port: number;
}

interface ApiService extends Service<ApiSettings> {
  server?: Server;
  authenticateRequest(req: ApiRequest): Promise<AccessGrant>;
  serveQueueRequest(req: ApiRequest, res: ServerResponse, operation: Operation): Promise<void>;
  serveConsoleRequest(req: ApiRequest, res: ServerResponse, operation: ConsoleOperation): Promise<void>;
  ownerQueues(req: ApiRequest, grant: AccessGrant): Promise<unknown[]>;
  callQueue(req: ApiRequest, operation: string, params: object, timeout?: number): Promise<unknown>;
  sendError(req: IncomingMessage, res: ServerResponse, err: unknown): void;
}

/** What fetchTask answers when there is a task. */
interface FetchedTask {
  taskId: string;
  attempt: number;
  leaseUntil: number;
  cancelled?: boolean;
  value: unknown;
}

/** What ackTask and update answer: ok, or why the worker does not hold the task. */
type QueueOutcome = { ok: true } | { ok: false; reason?: string; taskId?: string };

interface PublicError {
  status: number;
  type: string;
  message: string;
  data: unknown;
  retryable: boolean;
}

export function createApiService(options: ApiServiceOptions = {}): ServiceSchema {
  const env = process.env;
  const basePath = options.basePath ?? "/api";
  const bodyLimit = options.bodyLimit ?? 1024 * 1024;
  const queueService = options.queueService ?? "worker.queue";
  const authAction = options.authAction ?? (env.API_AUTH_ACTION || undefined);
  // Verification keys stay in this closure: service settings are published to every node.
  const verifyJwt: TokenVerifier | undefined = authAction
    ? undefined
    : createJwtVerifier(options.jwt ?? jwtOptionsFromEnv(env));
  const corsOrigins = (options.corsOrigins ?? (env.API_CORS_ORIGINS ?? "").split(","))
    .map(o => o.trim())
    .filter(o => o !== "");
  const cors =
    corsOrigins.length === 0
      ? undefined
      : {
          origin: corsOrigins.includes("*") ? "*" : corsOrigins,
          methods: ["GET", "POST"],
          allowedHeaders: ["Authorization", "Content-Type"],
          exposedHeaders: ["X-Task-Id", "X-Task-Attempt", "X-Lease-Until", "X-Task-Cancelled", "X-Ack", "Retry-After"],
          maxAge: 600,
        };
  const jsonParser = ApiGateway.bodyParser.json({ limit: bodyLimit, strict: false, type: () => true });
  const openApi = JSON.stringify(queueApiDocument({ basePath, bodyLimit, maxWaitSeconds: MAX_WAIT_SECONDS }));

  function authenticate(this: ApiService, req: ApiRequest, _res: ServerResponse, next: Next): void {
    if (cors && isPreflight(req)) return next();
    this.authenticateRequest(req).then(grant => {
      req.$grant = grant;
      next();
    }, next);
  }

  function parseBody(req: IncomingMessage, res: ServerResponse, next: Next): void {
    if (cors && isPreflight(req)) return next();
    jsonParser(req, res, (err?: unknown) =>
      next(err === undefined || err === null ? undefined : bodyError(err, bodyLimit)),
    );
  }

  const queueRoute = (operation: Operation) =>
    function (this: ApiService, req: ApiRequest, res: ServerResponse): void {
      void this.serveQueueRequest(req, res, operation);
    };
  const consoleRoute = (operation: ConsoleOperation) =>
    function (this: ApiService, req: ApiRequest, res: ServerResponse): void {
      void this.serveConsoleRequest(req, res, operation);
    };
  const consolePath = options.consolePath ?? "/console";
  const consoleFolder = options.consoleFolder;

  return {
    name: options.name ?? "api",
    mixins: [ApiGateway],
    settings: {
      port: options.port ?? (env.PORT ? Number(env.PORT) : 3000),
      ip: options.ip ?? (env.IP || "0.0.0.0"),
      queueService,
      authAction,
      bodyLimit,
      logRequest: "debug",
      logResponse: "debug",
      logRequestParams: null,
      logRouteRegistration: "debug",
      use: [securityHeaders],
      ...(cors ? { cors } : {}),
      routes: [
        {
          name: "queue",
          path: `${basePath}/queue`,
          // Authenticate before reading the body: an anonymous client cannot make the gateway parse JSON.
          bodyParsers: false,
          use: [authenticate, parseBody],
          mergeParams: false,
          autoAliases: false,
          mappingPolicy: "restrict",
          aliases: {
            "POST /:serviceId/fetch": queueRoute("fetch"),
            "POST /:serviceId/ack": queueRoute("ack"),
            "POST /:serviceId/add": queueRoute("add"),
            "POST /:serviceId/update": queueRoute("update"),
            "POST /:serviceId/release": queueRoute("release"),
            // The operator console's view of one queue and its actions on it.
            "GET /:serviceId/stats": consoleRoute("stats"),
            "GET /:serviceId/tasks": consoleRoute("tasks"),
            "GET /:serviceId/tasks/:taskId": consoleRoute("inspect"),
            "GET /:serviceId/dead": consoleRoute("dead"),
            "POST /:serviceId/redrive": consoleRoute("redrive"),
            "POST /:serviceId/cancel": consoleRoute("cancel"),
            "POST /:serviceId/purge": consoleRoute("purge"),
          },
        },
        {
          // The token owner's queues with their stats: the console's overview.
          name: "queues",
          path: `${basePath}/queues`,
          bodyParsers: false,
          use: [authenticate],
          mergeParams: false,
          autoAliases: false,
          mappingPolicy: "restrict",
          aliases: {
            "GET /": consoleRoute("queues"),
          },
        },
        ...(consoleFolder === false
          ? []
          : [
              {
                // The console's files: no token, they hold no data.
                name: "console",
                path: consolePath,
                bodyParsers: false,
                use: [consoleAssets(consolePath, consoleFolder ? [consoleFolder] : defaultConsoleFolders())],
                autoAliases: false,
                mappingPolicy: "restrict",
                aliases: {},
              },
            ]),
        {
          // Unauthenticated: for load balancers and orchestrators. The owners' queue names stay
          // internal (the `health` action lists them); this says how many this node serves.
          name: "health",
          path: "/health",
          bodyParsers: false,
          autoAliases: false,
          mappingPolicy: "restrict",
          aliases: {
            async "GET /"(req: ApiRequest, res: ServerResponse) {
              try {
                const h = (await req.$ctx.call(`${queueService}.health`, {})) as {
                  nodeId: string;
                  cassandra: boolean;
                  latencyMs: number;
                  ownedQueueCount: number;
                };
                const body = {
                  nodeId: h.nodeId,
                  cassandra: h.cassandra,
                  latencyMs: h.latencyMs,
                  ownedQueues: h.ownedQueueCount,
                };
                sendJson(res, h.cassandra ? 200 : 503, JSON.stringify(body));
              } catch {
                sendJson(res, 503, JSON.stringify({ cassandra: false, queue: "unavailable" }));
              }
            },
          },
        },
        {
          name: "openapi",
          path: basePath,
          bodyParsers: false,
          autoAliases: false,
          mappingPolicy: "restrict",
          aliases: {
            "GET /openapi.json"(_req: IncomingMessage, res: ServerResponse) {
              sendJson(res, 200, openApi);
            },
          },
        },
      ],
    },
    /**
     * Runs before moleculer-web's own `stopped` (own handlers come first when stopping). Its
     * server.close() waits for every connection to go idle, which keep-alive workers never do:
     * close the idle ones now and cut the rest after a second.
     */
    stopped(this: { server?: import("node:http").Server }) {
      const server = this.server;
      if (!server) return;
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1000).unref();
    },
    methods: {
      async authenticateRequest(this: ApiService, req: ApiRequest): Promise<AccessGrant> {
        const token = bearerToken(req.headers.authorization);
        if (!verifyJwt) return verifyWithAction(req.$ctx, authAction!, token);
        const grant = await verifyJwt(token);
        req.$grantToken = token;
        return grant;
      },

      async serveQueueRequest(this: ApiService, req: ApiRequest, res: ServerResponse, operation: Operation) {
        try {
          const grant = req.$grant;
          if (!grant) throw new AuthenticationRequiredError();
          const serviceId = req.$params.params?.serviceId ?? "";
          if (!grantCovers(grant, serviceId)) throw new ServiceNotAllowedError(serviceId);
          const body = requestObject(req.body);
          const namedOwner = req.headers["x-owner-id"] ?? body.ownerId;
          if (namedOwner !== undefined && namedOwner !== grant.ownerId) throw new OwnerNotAllowedError();

          switch (operation) {
            case "fetch": {
              const params: Record<string, unknown> = {
                serviceId,
                workerId: body.workerId,
                timeToRecover: body.timeToRecover,
              };
              const wait = waitSeconds(req.$params.query?.wait);
              let timeout: number | undefined;
              if (wait !== undefined && actionAccepts(this, `${queueService}.fetchTask`, "wait")) {
                params.wait = wait;
                timeout = wait * 1000 + WAIT_TIMEOUT_MARGIN_MS;
              }
              const task = (await this.callQueue(req, "fetchTask", params, timeout)) as FetchedTask | null;
              return sendTask(res, task);
            }
            case "ack": {
              const params = pick(body, ["workerId", "taskId", "result", "error"]);
              if (!nextWanted(req.$params.query?.next)) {
                const outcome = (await this.callQueue(req, "ackTask", { serviceId, ...params })) as QueueOutcome;
                if (!outcome.ok) throw refusal(serviceId, body.workerId, outcome);
                return sendJson(res, 200, '{"ok":true}');
              }
              // ?next=1: the ack, then the worker's next task, answered as fetch answers (the ack's
              // outcome in X-Ack). A queue service without `next` is asked twice. Both checks come
              // before the ack: a retry without the task id could ack the task the first attempt
              // took, and a bad lease refused after the ack would report a completed task as failed.
              if (typeof body.taskId !== "string" || body.taskId === "") {
                throw invalidField("taskId", "ack?next=1 must name the task it acks (taskId)", body.taskId);
              }
              const timeToRecover = body.timeToRecover;
              if (
                timeToRecover !== undefined &&
                (typeof timeToRecover !== "number" || !Number.isFinite(timeToRecover) || timeToRecover <= 0)
              ) {
                throw invalidField(
                  "timeToRecover",
                  "timeToRecover must be a positive number of seconds",
                  timeToRecover,
                );
              }
              // ?wait= as on fetch: with no task ready after the ack, the next one is long-polled.
              const wait = waitSeconds(req.$params.query?.wait);
              let next: FetchedTask | null | undefined;
              let outcome: QueueOutcome;
              if (actionAccepts(this, `${queueService}.ackTask`, "next")) {
                const answer = (await this.callQueue(req, "ackTask", {
                  serviceId,
                  ...params,
                  next: true,
                  timeToRecover,
                })) as QueueOutcome & { next?: FetchedTask | null };
                ({ next, ...outcome } = answer);
              } else {
                outcome = (await this.callQueue(req, "ackTask", { serviceId, ...params })) as QueueOutcome;
              }
              const waits = wait !== undefined && wait > 0 && actionAccepts(this, `${queueService}.fetchTask`, "wait");
              if (next === undefined || (next === null && waits)) {
                const fetchParams: Record<string, unknown> = { serviceId, workerId: body.workerId, timeToRecover };
                let timeout: number | undefined;
                if (waits) {
                  fetchParams.wait = wait;
                  timeout = wait * 1000 + WAIT_TIMEOUT_MARGIN_MS;
                }
                next = (await this.callQueue(req, "fetchTask", fetchParams, timeout)) as FetchedTask | null;
              }
              const ack = outcome.ok ? "ok" : outcome.reason === "LEASE_LOST" ? "LEASE_LOST" : "NO_TASK";
              return sendTask(res, next, { "X-Ack": ack });
            }
            case "add": {
              const params = pick(body, ["value", "token", "taskId", "delay", "notBefore", "maxAttempts"]);
              await this.callQueue(req, "add", { serviceId, ...params });
              return sendJson(res, 200, '{"ok":true}');
            }
            case "update": {
              const params = pick(body, ["workerId", "taskId", "progress"]);
              const outcome = (await this.callQueue(req, "update", { serviceId, ...params })) as QueueOutcome;
              if (!outcome.ok) throw refusal(serviceId, body.workerId, outcome);
              return sendJson(res, 200, JSON.stringify(outcome));
            }
            case "release": {
              const params = pick(body, ["workerId", "taskId", "delay", "error"]);
              const released = await this.callQueue(req, "release", { serviceId, ...params });
              if (released !== true) throw refusal(serviceId, body.workerId, {});
              return sendJson(res, 200, '{"ok":true}');
            }
          }
        } catch (err) {
          if (isServerFault(err)) this.logger.error(`HTTP ${operation} failed:`, err);
          this.sendError(req, res, err);
        }
      },

      async serveConsoleRequest(this: ApiService, req: ApiRequest, res: ServerResponse, operation: ConsoleOperation) {
        try {
          const grant = req.$grant;
          if (!grant) throw new AuthenticationRequiredError();
          const body = requestObject(req.body);
          const namedOwner = req.headers["x-owner-id"] ?? body.ownerId;
          if (namedOwner !== undefined && namedOwner !== grant.ownerId) throw new OwnerNotAllowedError();
          if (operation === "queues") {
            return sendJson(res, 200, JSON.stringify({ queues: await this.ownerQueues(req, grant) }));
          }
          const serviceId = req.$params.params?.serviceId ?? "";
          if (!grantCovers(grant, serviceId)) throw new ServiceNotAllowedError(serviceId);
          const query = req.$params.query ?? {};
          let answer: unknown;
          switch (operation) {
            case "stats":
              answer = await this.callQueue(req, "stats", { serviceId });
              break;
            case "tasks":
              answer = await this.callQueue(req, "tasks", { serviceId, ...pick(query, ["state", "offset", "limit"]) });
              break;
            case "inspect": {
              const taskId = req.$params.params?.taskId ?? "";
              const task = (await this.callQueue(req, "inspect", { serviceId, taskId })) as { state?: string };
              if (task.state === "unknown") throw new TaskNotFoundError(serviceId, taskId);
              answer = task;
              break;
            }
            case "dead":
              answer = { tasks: await this.callQueue(req, "dead", { serviceId, ...pick(query, ["limit"]) }) };
              break;
            case "redrive":
              answer = await this.callQueue(req, "redrive", { serviceId, ...pick(body, ["taskIds"]) });
              break;
            case "cancel":
              answer = await this.callQueue(req, "cancel", { serviceId, ...pick(body, ["taskId"]) });
              break;
            case "purge":
              // Purging cannot be undone: the caller repeats the queue's id, so a wrong URL purges nothing.
              if (body.confirm !== serviceId) {
                const message = "Purging needs 'confirm' set to the queue's serviceId";
                throw new ValidationError(message, "VALIDATION_ERROR", [
                  { type: "equalValue", field: "confirm", message, expected: serviceId, actual: body.confirm },
                ]);
              }
              answer = await this.callQueue(req, "purge", { serviceId });
              break;
          }
          return sendJson(res, 200, JSON.stringify(answer));
        } catch (err) {
          if (isServerFault(err)) this.logger.error(`HTTP console ${operation} failed:`, err);
          this.sendError(req, res, err);
        }
      },

      /**
       * The token owner's queues that the token covers, with their stats: one read of the owner's
       * queue list, then each queue's counters from the node that serves it (in memory there).
       */
      async ownerQueues(this: ApiService, req: ApiRequest, grant: AccessGrant): Promise<unknown[]> {
        type Listed = { serviceId: string; seenAt: number; stats?: unknown };
        if (grant.services === "*") return (await this.callQueue(req, "queues", { withStats: true })) as Listed[];
        // A token for some queues: no work on the others.
        const listed = ((await this.callQueue(req, "queues", {})) as Listed[]).filter(q =>
          grantCovers(grant, q.serviceId),
        );
        return Promise.all(
          listed.map(async q => ({ ...q, stats: await this.callQueue(req, "stats", { serviceId: q.serviceId }) })),
        );
      },

      /**
       * Calls `<queueService>.<operation>` as the token's owner, with the token as the call's grant;
       * a token checked by the `authAction` is not a grant, so this node signs one (when it can).
       */
      async callQueue(this: ApiService, req: ApiRequest, operation: string, params: object, timeout?: number) {
        const ownerId = req.$grant!.ownerId;
        const action = `${queueService}.${operation}`;
        const guard = aclGuardOf(this.broker as ServiceBroker);
        const meta =
          req.$grantToken !== undefined
            ? { ownerId, acl: { ownerId }, grant: req.$grantToken }
            : guard
              ? await guard.internalMeta(ownerId, req.$grant!.services)
              : { ownerId, acl: { ownerId } };
        try {
          return await req.$ctx.call(action, params, {
            meta,
            ...(timeout !== undefined ? { timeout } : {}),
          });
        } catch (err) {
          if (isNotFound(err, action)) throw new QueueUnavailableError(action);
          throw err;
        }
      },

      /** Every error leaves as `{ type, message, data }`: no stack, and nothing of an unexpected error but its status. */
      sendError(this: ApiService, _req: IncomingMessage, res: ServerResponse, err: unknown) {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const e = publicError(err);
        const headers: Record<string, string> = {};
        if (e.status === 401) {
          headers["WWW-Authenticate"] = e.type === "AUTH_REQUIRED" ? "Bearer" : 'Bearer error="invalid_token"';
        }
        if (e.retryable || e.status === 503) headers["Retry-After"] = "1";
        sendJson(res, e.status, JSON.stringify({ type: e.type, message: e.message, data: e.data }), headers);
      },
    },
    started(this: Service) {
      // With port 0 the system picked one: publish the real port for callers (tests, `npm start`).
      const gateway = this as unknown as ApiService;
      const address = gateway.server?.address() as AddressInfo | null;
      if (address) gateway.settings.port = address.port;
    },
  } as ServiceSchema;
}

/** The token of an `Authorization: Bearer <token>` header. */
function bearerToken(header: string | undefined): string {
  if (!header) throw new AuthenticationRequiredError();
  const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
  if (!match?.[1]) throw new InvalidTokenError("the Authorization header is not `Bearer <token>`");
  return match[1];
}

/** Delegated verification: 4xx answers refuse the token, anything else means the verifier is unavailable. */
async function verifyWithAction(
  ctx: Context<unknown, Record<string, unknown>>,
  action: string,
  token: string,
): Promise<AccessGrant> {
  let answer: unknown;
  try {
    answer = await ctx.call(action, { token });
  } catch (err) {
    const e = err as { code?: unknown; type?: unknown };
    const type = typeof e.type === "string" ? e.type : "ERROR";
    if (isNotFound(err, action) || type === "SERVICE_NOT_AVAILABLE") throw new AuthUnavailableError(action, type);
    if (type === "TOKEN_EXPIRED") throw new TokenExpiredError();
    if (typeof e.code === "number" && e.code >= 400 && e.code < 500) {
      throw new InvalidTokenError(`refused by the verifier (${type})`);
    }
    throw new AuthUnavailableError(action, type);
  }
  if (typeof answer !== "object" || answer === null) throw new InvalidTokenError("the verifier granted nothing");
  const { ownerId, services } = answer as { ownerId?: unknown; services?: unknown };
  return grantFromClaims({ sub: ownerId, services });
}

function isNotFound(err: unknown, action: string): boolean {
  const e = err as { type?: unknown; data?: { action?: unknown } } | undefined;
  return e?.type === "SERVICE_NOT_FOUND" && e.data?.action === action;
}

/** A refused ack, update or release as a 409: LEASE_LOST when another worker has the task now, else NO_TASK. */
function refusal(serviceId: string, workerId: unknown, outcome: { reason?: string; taskId?: string }): Error {
  if (outcome.reason === "LEASE_LOST") return new LeaseLostError(serviceId, String(workerId), outcome.taskId);
  return new NoTaskError(serviceId, String(workerId));
}

/** body-parser's errors as the API's own (its messages may quote the body, so none is kept). */
function bodyError(err: unknown, limit: number): Error {
  const e = err as { type?: unknown; status?: unknown };
  if (e.type === "entity.too.large") return new BodyTooLargeError(limit);
  if (e.type === "entity.parse.failed") return new MalformedJsonError();
  const status = typeof e.status === "number" && e.status >= 400 && e.status < 500 ? e.status : 400;
  return new UnreadableBodyError(status, typeof e.type === "string" ? e.type : "unreadable");
}

/** The body as an object; an absent body is `{}`, anything but an object is a validation error. */
function requestObject(body: unknown): Record<string, unknown> {
  if (body === undefined) return {};
  if (typeof body === "object" && body !== null && !Array.isArray(body)) return body as Record<string, unknown>;
  throw new ValidationError("The request body must be a JSON object", "VALIDATION_ERROR", [
    { type: "object", field: "body", message: "The request body must be a JSON object" },
  ]);
}

/** A 422 naming the field, as the queue's own validation gives it. */
function invalidField(field: string, message: string, actual: unknown): Error {
  return new ValidationError(message, "VALIDATION_ERROR", [{ type: "invalid", field, message, actual }]);
}

/** `?next=1` (or `true`) on ack; absent, `0` or `false`: a plain ack. */
function nextWanted(raw: unknown): boolean {
  if (raw === undefined || raw === "0" || raw === "false") return false;
  if (raw === "1" || raw === "true") return true;
  const message = "The 'next' query parameter must be 1 or true (or 0 or false)";
  throw new ValidationError(message, "VALIDATION_ERROR", [{ type: "boolean", field: "next", message, actual: raw }]);
}

function waitSeconds(raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  const wait = typeof raw === "string" && /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
  if (!(wait >= 0 && wait <= MAX_WAIT_SECONDS)) {
    const message = `The 'wait' query parameter must be a number of seconds from 0 to ${MAX_WAIT_SECONDS}`;
    throw new ValidationError(message, "VALIDATION_ERROR", [
      { type: Number.isNaN(wait) ? "number" : "numberMax", field: "wait", message, actual: raw },
    ]);
  }
  return wait;
}

/** Whether the action, as the registry knows it, declares the parameter. */
function actionAccepts(service: ApiService, action: string, param: string): boolean {
  const endpoint = service.broker.findNextActionEndpoint(action) as unknown;
  if (endpoint instanceof Error) return false;
  const params = (endpoint as { action?: { params?: Record<string, unknown> } }).action?.params;
  return params !== undefined && params !== null && param in params;
}

function pick(body: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) if (body[key] !== undefined) out[key] = body[key];
  return out;
}

function publicError(err: unknown): PublicError {
  if (err instanceof MoleculerError) {
    const status = typeof err.code === "number" && err.code >= 400 && err.code <= 599 ? err.code : 500;
    if (status >= 500 && !err.type) {
      return { status, type: "INTERNAL_ERROR", message: "Internal server error", data: {}, retryable: err.retryable };
    }
    return { status, type: err.type || "ERROR", message: err.message, data: err.data ?? {}, retryable: err.retryable };
  }
  return { status: 500, type: "INTERNAL_ERROR", message: "Internal server error", data: {}, retryable: false };
}

function isServerFault(err: unknown): boolean {
  return publicError(err).status >= 500;
}

function sendJson(res: ServerResponse, status: number, json: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    ...headers,
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(json)),
    "Cache-Control": "no-store",
  });
  res.end(json);
}

function sendEmpty(res: ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(204, { ...headers, "Cache-Control": "no-store" });
  res.end();
}

/** A task as fetch answers it: its value as the body, its id, attempt and lease in headers; 204 for none. */
function sendTask(
  res: ServerResponse,
  task: FetchedTask | null | undefined,
  headers: Record<string, string> = {},
): void {
  if (task === null || task === undefined) return sendEmpty(res, headers);
  sendJson(res, 200, JSON.stringify(task.value), {
    ...headers,
    "X-Task-Id": encodeURIComponent(task.taskId),
    "X-Task-Attempt": String(task.attempt),
    "X-Lease-Until": String(task.leaseUntil),
    "X-Task-Cancelled": String(task.cancelled === true),
  });
}
