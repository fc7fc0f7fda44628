/**
 * The OpenAPI 3 description of the HTTP API for external workers, served at `GET <basePath>/openapi.json`.
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
        "Errors are `{ type, message, data }`.",
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
            "200": jsonResponse(
              "The task's value (any JSON).",
              {},
              {
                "X-Task-Id": {
                  description: "The task id, percent-encoded (encodeURIComponent); UUIDs appear unchanged.",
                  schema: { type: "string" },
                },
                "X-Task-Attempt": {
                  description: "1 on first delivery, +1 per redelivery.",
                  schema: { type: "integer" },
                },
                "X-Lease-Until": {
                  description: "End of this worker's lease, in ms since the Unix epoch.",
                  schema: { type: "integer" },
                },
              },
            ),
            "204": { description: "No task available." },
            ...commonErrors,
          },
        },
      },
      [queuePath("ack")]: {
        post: {
          operationId: "ackTask",
          summary: "Complete the task this worker holds",
          parameters: [serviceIdParameter],
          requestBody: jsonBody(ref("AckRequest")),
          responses: {
            "200": jsonResponse("The task is completed.", ref("Ok")),
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
