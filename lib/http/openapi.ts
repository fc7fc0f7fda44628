/**
 * The OpenAPI 3 description of the HTTP API for external workers and the operator console, served
 * at `GET <basePath>/openapi.json`.
 * Written by hand: it documents the contract of services/api.service.ts and must change with it.
 */

export interface OpenApiDocumentOptions {
  /** Prefix of every route. @defaultValue "/api" */
  basePath?: string;
  /** Largest accepted request body, in bytes. @defaultValue 1 MiB */
  bodyLimit?: number;
  /** Longest `?wait=` accepted on fetch, in seconds. @defaultValue 20 */
  maxWaitSeconds?: number;
}

type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const errorRef = (name: string): Schema => ({ $ref: `#/components/responses/${name}` });

const jsonBody = (schema: Schema): Schema => ({
  required: true,
  content: { "application/json": { schema } },
});

const jsonResponse = (description: string, schema: Schema, headers?: Schema): Schema => ({
  description,
  ...(headers ? { headers } : {}),
  content: { "application/json": { schema } },
});

/** The headers of a delivered task (fetch, and ack with ?next=1). */
const taskHeaders: Schema = {
  "X-Task-Id": {
    description: "The task id, percent-encoded (encodeURIComponent); UUIDs appear unchanged.",
    schema: { type: "string" },
  },
  "X-Task-Attempt": { description: "1 on first delivery, +1 per redelivery.", schema: { type: "integer" } },
  "X-Lease-Until": {
    description: "End of this worker's lease, in ms since the Unix epoch.",
    schema: { type: "integer" },
  },
  "X-Task-Cancelled": {
    description: "The task was cancelled while this worker held it: give it back, do not run it.",
    schema: { type: "boolean" },
  },
};

/** With ack?next=1: how the ack went. */
const ackHeader: Schema = {
  description: "The ack's outcome: `ok`, `NO_TASK` or `LEASE_LOST`.",
  schema: { type: "string", enum: ["ok", "NO_TASK", "LEASE_LOST"] },
};

/** The responses every queue route can give besides its own. */
const commonErrors: Schema = {
  "400": errorRef("MalformedJson"),
  "401": errorRef("Unauthenticated"),
  "403": errorRef("Forbidden"),
  "413": errorRef("BodyTooLarge"),
  "422": errorRef("ValidationFailed"),
  "503": errorRef("Unavailable"),
};

const serviceIdParameter: Schema = {
  name: "serviceId",
  in: "path",
  required: true,
  description: "The queue: a serviceId the token covers. Queues are per owner (the token's `sub`).",
  schema: { type: "string", format: "uuid" },
};

const workerId: Schema = {
  type: "string",
  minLength: 1,
  maxLength: 256,
  description: "Identifies the worker; one task at a time per worker.",
};

const taskId: Schema = {
  type: "string",
  minLength: 1,
  maxLength: 256,
  description: "The task the worker holds (X-Task-Id, decoded): the call then cannot apply to a newer task.",
};

/** The responses every console route can give besides its own (GETs have no body to refuse). */
const readErrors: Schema = {
  "401": errorRef("Unauthenticated"),
  "403": errorRef("Forbidden"),
  "422": errorRef("ValidationFailed"),
  "503": errorRef("Unavailable"),
};

const integer = (description: string, extra: Schema = {}): Schema => ({ type: "integer", description, ...extra });

const taskIdPath: Schema = {
  name: "taskId",
  in: "path",
  required: true,
  description: "The task's id (percent-encoded).",
  schema: { type: "string", minLength: 1, maxLength: 256 },
};

/** The live states a task list can be narrowed to. */
const LIST_STATES = ["waiting", "delayed", "leased", "handing-over", "dead"];

export function queueApiDocument(options: OpenApiDocumentOptions = {}): Record<string, unknown> {
  const base = options.basePath ?? "/api";
  const bodyLimit = options.bodyLimit ?? 1024 * 1024;
  const maxWait = options.maxWaitSeconds ?? 20;
  const queuePath = (op: string) => `${base}/queue/{serviceId}/${op}`;

  return {
    openapi: "3.0.3",
    info: {
      title: "worker.queue HTTP API",
      version: "1.0.0",
      description:
        "Pull-based access to worker.queue for workers outside the Moleculer cluster: fetch a task under a lease, " +
        "do the work, ack it. A task not acked before its lease ends goes to the next worker that fetches " +
        `(at-least-once). Request bodies are JSON objects of at most ${bodyLimit} bytes. ` +
        "Errors are `{ type, message, data }`. The GET routes and redrive, cancel and purge serve the operator " +
        "console (`/console`), which needs the same bearer token.",
    },
    security: [{ bearerAuth: [] }],
    paths: {
      [queuePath("fetch")]: {
        post: {
          operationId: "fetchTask",
          summary: "Take the next task, or the one this worker already holds",
          description:
            "Returns the task's value as the body, the SAME task on every call until it is acked or its lease is " +
            "lost. 204 when there is nothing to do.",
          parameters: [
            serviceIdParameter,
            {
              name: "wait",
              in: "query",
              required: false,
              description: `Long-poll: seconds to wait for a task when the queue is empty (0-${maxWait}). Passed to worker.queue when it supports waiting; otherwise the answer is immediate.`,
              schema: { type: "number", minimum: 0, maximum: maxWait },
            },
          ],
          requestBody: jsonBody(ref("FetchRequest")),
          responses: {
            "200": jsonResponse("The task's value (any JSON).", {}, taskHeaders),
            "204": { description: "No task available." },
            ...commonErrors,
          },
        },
      },
      [queuePath("ack")]: {
        post: {
          operationId: "ackTask",
          summary: "Complete the task this worker holds (with ?next=1, also take the next one)",
          description:
            "Without `next`: 200 `{ ok: true }`, or 409 when the worker no longer holds the task. With `?next=1`: " +
            "the ack, then the worker's next task (as fetch with the body's timeToRecover and the query's wait), answered " +
            "as fetch answers (200 with the value and the task headers, 204 for none); the ack's outcome is in " +
            "X-Ack (`ok`, `NO_TASK` or `LEASE_LOST`) and a refused ack is no 409. One request per task.",
          parameters: [
            serviceIdParameter,
            {
              name: "next",
              in: "query",
              required: false,
              description: "1 or true: answer with the worker's next task too.",
              schema: { type: "string", enum: ["1", "true", "0", "false"] },
            },
            {
              name: "wait",
              in: "query",
              required: false,
              description: `With ?next=1: seconds to wait for the next task when none is ready after the ack (0-${maxWait}), as on fetch.`,
              schema: { type: "number", minimum: 0, maximum: maxWait },
            },
          ],
          requestBody: jsonBody(ref("AckRequest")),
          responses: {
            "200": jsonResponse(
              "The task is completed: `{ ok: true }`; with ?next=1, the next task's value (any JSON) and headers.",
              { oneOf: [ref("Ok"), {}] },
              { "X-Ack": ackHeader, ...taskHeaders },
            ),
            "204": {
              description: "With ?next=1: no task ready; the ack's outcome in X-Ack.",
              headers: { "X-Ack": ackHeader },
            },
            "409": errorRef("NoTaskOrLeaseLost"),
            ...commonErrors,
          },
        },
      },
      [queuePath("add")]: {
        post: {
          operationId: "addTask",
          summary: "Enqueue a task",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("AddRequest")),
          responses: { "200": jsonResponse("The task is stored.", ref("Ok")), ...commonErrors },
        },
      },
      [queuePath("update")]: {
        post: {
          operationId: "updateTask",
          summary: "Report progress on the held task and extend its lease; tells whether it was cancelled",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("UpdateRequest")),
          responses: {
            "200": jsonResponse("The lease is extended.", ref("UpdateResponse")),
            "409": errorRef("NoTaskOrLeaseLost"),
            ...commonErrors,
          },
        },
      },
      [queuePath("release")]: {
        post: {
          operationId: "releaseTask",
          summary: "Give the held task back to the queue without completing it",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("ReleaseRequest")),
          responses: {
            "200": jsonResponse("The task is back in the queue.", ref("Ok")),
            "409": errorRef("NoTaskOrLeaseLost"),
            ...commonErrors,
          },
        },
      },
      [`${base}/queues`]: {
        get: {
          operationId: "listQueues",
          summary: "The token owner's queues that the token covers, each with its stats",
          description:
            "Queues that saw an add within the retention. The list is one read of the owner's queue index; the " +
            "counters come from the memory of the node serving each queue (no scan of the tasks).",
          responses: {
            "200": jsonResponse("The queues.", ref("QueueList")),
            "401": errorRef("Unauthenticated"),
            "503": errorRef("Unavailable"),
          },
        },
      },
      [`${base}/queue/{serviceId}/stats`]: {
        get: {
          operationId: "queueStats",
          summary: "Counters of one queue, the workers holding its tasks, and its recent throughput",
          parameters: [serviceIdParameter],
          responses: { "200": jsonResponse("The queue's stats.", ref("QueueStats")), ...readErrors },
        },
      },
      [`${base}/queue/{serviceId}/tasks`]: {
        get: {
          operationId: "listTasks",
          summary: "Live tasks of the queue, oldest first, a page at a time (metadata only, no values)",
          parameters: [
            serviceIdParameter,
            {
              name: "state",
              in: "query",
              required: false,
              description: "Only tasks in this state.",
              schema: { type: "string", enum: LIST_STATES },
            },
            { name: "offset", in: "query", required: false, schema: { type: "integer", minimum: 0, default: 0 } },
            {
              name: "limit",
              in: "query",
              required: false,
              schema: { type: "integer", minimum: 1, maximum: 1000, default: 50 },
            },
          ],
          responses: { "200": jsonResponse("One page of tasks.", ref("TaskPage")), ...readErrors },
        },
      },
      [`${base}/queue/{serviceId}/tasks/{taskId}`]: {
        get: {
          operationId: "inspectTask",
          summary: "One task with its value, progress and last error (decrypted for its owner)",
          parameters: [serviceIdParameter, taskIdPath],
          responses: {
            "200": jsonResponse("The task.", ref("TaskDetails")),
            "404": jsonResponse(
              "TASK_NOT_FOUND: the queue has no such task (or it is past its retention).",
              ref("Error"),
            ),
            ...readErrors,
          },
        },
      },
      [`${base}/queue/{serviceId}/dead`]: {
        get: {
          operationId: "deadTasks",
          summary: "The dead-letter list: tasks that used up their attempts, with their last error",
          parameters: [
            serviceIdParameter,
            {
              name: "limit",
              in: "query",
              required: false,
              schema: { type: "integer", minimum: 1, maximum: 10000, default: 1000 },
            },
          ],
          responses: { "200": jsonResponse("The dead tasks, oldest first.", ref("DeadList")), ...readErrors },
        },
      },
      [queuePath("redrive")]: {
        post: {
          operationId: "redriveTasks",
          summary: "Put dead tasks back in the queue with a fresh attempt count",
          parameters: [serviceIdParameter],
          requestBody: { ...jsonBody(ref("RedriveRequest")), required: false },
          responses: {
            "200": jsonResponse("How many tasks went back.", {
              type: "object",
              properties: { redriven: { type: "integer" } },
            }),
            ...commonErrors,
          },
        },
      },
      [queuePath("cancel")]: {
        post: {
          operationId: "cancelTask",
          summary: "Cancel a task: a waiting one is never delivered, a running one is flagged to its worker",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("CancelRequest")),
          responses: { "200": jsonResponse("The outcome.", ref("CancelResponse")), ...commonErrors },
        },
      },
      [queuePath("purge")]: {
        post: {
          operationId: "purgeQueue",
          summary: "Remove every waiting, delayed and dead task of the queue (running ones go on)",
          description:
            "Cannot be undone: `confirm` must repeat the serviceId, else 422 VALIDATION_ERROR (field confirm).",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("PurgeRequest")),
          responses: {
            "200": jsonResponse("How many tasks were removed.", {
              type: "object",
              properties: { purged: { type: "integer" } },
            }),
            ...commonErrors,
          },
        },
      },
      [`${base}/openapi.json`]: {
        get: {
          operationId: "openApiDocument",
          summary: "This document",
          security: [],
          responses: { "200": jsonResponse("The OpenAPI document.", { type: "object" }) },
        },
      },
    },
    components: {
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description:
            'A JWT with `sub` = owner id, `services` = array of serviceIds (or "*"), and `exp`. ' +
            "The owner is always taken from the token, never from the request.",
        },
      },
      schemas: {
        FetchRequest: {
          type: "object",
          required: ["workerId"],
          properties: {
            workerId,
            timeToRecover: {
              type: "number",
              exclusiveMinimum: true,
              minimum: 0,
              default: 60,
              description: "Lease length in seconds: without an ack by then, the task goes to another worker.",
            },
          },
        },
        AckRequest: {
          type: "object",
          required: ["workerId"],
          properties: {
            workerId,
            taskId,
            result: { description: "Any JSON, handed to the workflow when the task carries a token." },
            error: { description: "Any JSON describing a failure, handed to the workflow instead of a result." },
            timeToRecover: {
              type: "number",
              minimum: 0,
              exclusiveMinimum: true,
              description: "With ?next=1: the next task's lease in seconds (default 60).",
            },
          },
        },
        AddRequest: {
          type: "object",
          required: ["value"],
          properties: {
            value: { description: "Any JSON except null: the task's value, encrypted at rest." },
            token: { type: "object", description: "Workflow token: the ack's result is handed back with it." },
            taskId: {
              type: "string",
              minLength: 1,
              maxLength: 256,
              description: "Caller-chosen id: an add repeated with the same id within retention enqueues once.",
            },
            delay: { type: "number", minimum: 0, description: "Seconds before the task is first offered." },
            notBefore: {
              type: "integer",
              minimum: 0,
              description: "Time (ms since the Unix epoch) before which the task is not offered; not with delay.",
            },
            maxAttempts: {
              type: "integer",
              minimum: 0,
              description: "Deliveries before the task is dead-lettered (unset: the queue's default).",
            },
          },
        },
        UpdateRequest: {
          type: "object",
          required: ["workerId"],
          properties: { workerId, taskId, progress: { description: "Any JSON describing the progress." } },
        },
        UpdateResponse: {
          type: "object",
          properties: {
            ok: { type: "boolean", enum: [true] },
            taskId: { type: "string" },
            attempt: { type: "integer" },
            cancelled: { type: "boolean", description: "The task was cancelled: stop working on it." },
            leaseUntil: { type: "integer", description: "New end of the lease, ms since the Unix epoch." },
          },
        },
        ReleaseRequest: {
          type: "object",
          required: ["workerId"],
          properties: {
            workerId,
            taskId,
            delay: { type: "number", minimum: 0, description: "Seconds before the task is offered again." },
            error: { description: "Any JSON describing why the task was released." },
          },
        },
        Ok: { type: "object", properties: { ok: { type: "boolean", enum: [true] } } },
        QueueStats: {
          type: "object",
          properties: {
            ready: integer("Tasks waiting for a worker (delayed ones whose time has come included)."),
            delayed: integer("Tasks waiting for their time."),
            inFlight: integer("Tasks a worker holds under a lease."),
            dead: integer("Tasks in the dead-letter list."),
            handingOver: integer("Completed tasks whose result is being handed to the workflow."),
            oldestWaitingMs: integer("Age of the oldest ready task, in ms (0 when none)."),
            workers: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  workerId: { type: "string" },
                  taskId: { type: "string" },
                  leaseUntil: integer("End of the lease, ms since the Unix epoch."),
                  attempt: { type: "integer" },
                },
              },
            },
            completedPer10s: {
              type: "array",
              items: { type: "integer" },
              description: "Tasks completed per 10-second slot over the last 5 minutes, oldest first.",
            },
          },
        },
        QueueList: {
          type: "object",
          properties: {
            queues: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  serviceId: { type: "string", format: "uuid" },
                  seenAt: integer("Last add seen (to the hour), ms since the Unix epoch."),
                  stats: ref("QueueStats"),
                },
              },
            },
          },
        },
        TaskStatus: {
          type: "object",
          properties: {
            taskId: { type: "string" },
            state: {
              type: "string",
              enum: [...LIST_STATES, "done", "cancelled", "unknown"],
            },
            attempt: integer("Deliveries so far."),
            maxAttempts: integer("Deliveries before it is dead (0: unlimited)."),
            worker: { type: "string", description: "The worker holding it (leased tasks)." },
            leaseUntil: integer("End of the worker's lease, ms since the Unix epoch."),
            notBefore: integer("Not offered before this time, ms since the Unix epoch."),
            cancelled: { type: "boolean" },
            reason: { type: "string", description: "Why it is dead." },
            expiresAt: integer("End of its retention, ms since the Unix epoch."),
          },
        },
        TaskPage: {
          type: "object",
          properties: {
            total: integer("Tasks matching the filter, all pages."),
            tasks: { type: "array", items: ref("TaskStatus") },
          },
        },
        TaskDetails: {
          allOf: [
            ref("TaskStatus"),
            {
              type: "object",
              properties: {
                value: { description: "The task's value." },
                progress: { description: "The last progress its worker reported." },
                error: { description: "The last error (a release's or a failed ack's)." },
              },
            },
          ],
        },
        DeadList: {
          type: "object",
          properties: {
            tasks: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  taskId: { type: "string" },
                  attempt: { type: "integer" },
                  reason: { type: "string" },
                  error: { description: "The last error." },
                  expiresAt: { type: "integer" },
                },
              },
            },
          },
        },
        RedriveRequest: {
          type: "object",
          properties: {
            taskIds: {
              type: "array",
              items: { type: "string" },
              description: "The dead tasks to redrive; all of them when absent.",
            },
          },
        },
        CancelRequest: {
          type: "object",
          required: ["taskId"],
          properties: { taskId: { type: "string", minLength: 1, maxLength: 256 } },
        },
        CancelResponse: {
          type: "object",
          properties: {
            ok: { type: "boolean", description: "false: the task had ended, was handing over, or is unknown." },
            state: {
              type: "string",
              description: "`cancelled`, or `leased` for a running task now flagged to its worker.",
            },
            taskId: { type: "string" },
          },
        },
        PurgeRequest: {
          type: "object",
          required: ["confirm"],
          properties: { confirm: { type: "string", description: "The queue's serviceId, repeated." } },
        },
        Error: {
          type: "object",
          required: ["type", "message"],
          properties: {
            type: { type: "string", description: "Stable SCREAMING_CASE error type, e.g. LEASE_LOST." },
            message: { type: "string" },
            data: { description: "Structured details; for VALIDATION_ERROR a list of { field, type, message }." },
          },
        },
      },
      responses: {
        MalformedJson: jsonResponse("MALFORMED_JSON: the body is not valid JSON.", ref("Error")),
        Unauthenticated: jsonResponse(
          "AUTH_REQUIRED, INVALID_TOKEN or TOKEN_EXPIRED: send a valid `Authorization: Bearer <token>`.",
          ref("Error"),
        ),
        Forbidden: jsonResponse(
          "SERVICE_NOT_ALLOWED (the token does not list this serviceId) or OWNER_NOT_ALLOWED.",
          ref("Error"),
        ),
        BodyTooLarge: jsonResponse(`BODY_TOO_LARGE: the body is over ${bodyLimit} bytes.`, ref("Error")),
        ValidationFailed: jsonResponse("VALIDATION_ERROR: `data` lists each invalid field.", ref("Error")),
        NoTaskOrLeaseLost: jsonResponse(
          "NO_TASK (the worker holds no task) or LEASE_LOST (its lease ran out and the task went to another worker).",
          ref("Error"),
        ),
        Unavailable: jsonResponse(
          "A transient fault (storage, queue ownership, token verification): retry.",
          ref("Error"),
          {
            "Retry-After": { schema: { type: "integer" }, description: "Seconds to wait before retrying." },
          },
        ),
      },
    },
  };
}
