/**
 * Every failure the queue reports, one class each. The `type` string and `code` are the
 * contract across Moleculer nodes (errors travel as { name, message, code, type, data, retryable }).
 * Caller mistakes are MoleculerClientError (4xx); transient faults are MoleculerRetryableError.
 * No error carries a key, a plaintext value or a token.
 */
import { Errors } from "moleculer";

const { MoleculerClientError, MoleculerRetryableError, MoleculerError } = Errors;

/** No owner could be established for the call (no ctx.meta.ownerId / ctx.meta.acl.ownerId). */
export class OwnerMissingError extends MoleculerClientError {
  constructor(action: string) {
    super("No owner for this call: set ctx.meta.ownerId (normally done by the ACL middleware)", 401, "OWNER_MISSING", {
      action,
    });
  }
}

/** The ACL decision refused the call. */
export class AccessDeniedError extends MoleculerClientError {
  constructor(data: Record<string, unknown>) {
    super("Access denied", 403, "ACCESS_DENIED", data);
  }
}

/** A parameter is invalid; `field` names it. */
export class InvalidParameterError extends MoleculerClientError {
  constructor(field: string, message: string, data: Record<string, unknown> = {}) {
    super(message, 422, "INVALID_PARAMETER", { field, ...data });
  }
}

/** The serialized value (or result) is larger than the configured limit. */
export class ValueTooLargeError extends MoleculerClientError {
  constructor(field: string, size: number, limit: number) {
    super(`${field} is ${size} bytes, over the limit of ${limit} bytes`, 413, "VALUE_TOO_LARGE", {
      field,
      size,
      limit,
    });
  }
}

/** A JSON value nested deeper than the configured limit (checked without recursion). */
export class ValueTooDeepError extends MoleculerClientError {
  constructor(field: string, limit: number) {
    super(`${field} is nested deeper than ${limit} levels`, 422, "VALIDATION_ERROR", { field, limit });
  }
}

/** The node asked to serve a queue does not own it (any more); the caller re-routes. */
export class NotOwnerError extends MoleculerRetryableError {
  constructor(queue: string, owner: string | null) {
    super("This node does not own the queue", 503, "QUEUE_NOT_OWNER", { queue, owner });
  }
}

/** The queue's ownership was lost or a write's outcome is unknown; the call may be retried. */
export class OwnershipLostError extends MoleculerRetryableError {
  constructor(queue: string, reason: string) {
    super(`Queue ownership was lost (${reason}); retry the call`, 503, "QUEUE_OWNERSHIP_LOST", { queue, reason });
  }
}

/** Cassandra did not answer in time or failed; nothing was acknowledged to the caller. */
export class StorageUnavailableError extends MoleculerRetryableError {
  constructor(operation: string, reason: string) {
    super(`Storage unavailable during ${operation}: ${reason}`, 503, "STORAGE_UNAVAILABLE", { operation, reason });
  }
}

/** Cassandra refused a statement for a reason no retry fixes (a schema or configuration problem). */
export class StorageError extends MoleculerError {
  constructor(operation: string, reason: string) {
    super(`Storage failed during ${operation}: ${reason}`, 500, "STORAGE_ERROR", { operation, reason });
  }
}

/** The keys service could not give a key; nothing was stored or changed. */
export class KeysUnavailableError extends MoleculerRetryableError {
  constructor(ownerId: string, reason: string) {
    super(`The keys service could not provide a key: ${reason}`, 503, "KEYS_UNAVAILABLE", { ownerId, reason });
  }
}

/** A stored value failed authentication or could not be decrypted; names the task, never the data. */
export class DecryptionError extends MoleculerError {
  constructor(queue: string, taskId: string, field: string, reason: string) {
    super(`Task ${taskId} could not be decrypted (${field}): ${reason}`, 500, "DECRYPTION_FAILED", {
      queue,
      taskId,
      field,
      reason,
    });
  }
}

/** Configuration is invalid; the message says what to fix. */
export class ConfigurationError extends MoleculerError {
  constructor(setting: string, message: string) {
    super(message, 500, "CONFIGURATION_ERROR", { setting });
  }
}

/** A key was asked for one owner through the context of a call made by another owner. */
export class KeyOwnerMismatchError extends MoleculerError {
  constructor(ownerId: string, callerOwnerId: string) {
    super(
      "The key's owner differs from the owner of the calling context; pass the context of a call made by that owner",
      500,
      "KEY_OWNER_MISMATCH",
      { ownerId, callerOwnerId },
    );
  }
}

/** The keys service knows no key with this id for this owner (never created, or expired). */
export class OwnerKeyNotFoundError extends MoleculerClientError {
  constructor(ownerId: string, keyId: string) {
    super(`The owner has no key ${keyId} (never created, or expired)`, 404, "OWNER_KEY_NOT_FOUND", { ownerId, keyId });
  }
}

/** An HTTP request came without `Authorization: Bearer <token>`. */
export class AuthenticationRequiredError extends MoleculerClientError {
  constructor() {
    super("Authentication required: send Authorization: Bearer <token>", 401, "AUTH_REQUIRED", {});
  }
}

/** The bearer token failed verification (signature, format, claims); `reason` says which check, never the token. */
export class InvalidTokenError extends MoleculerClientError {
  constructor(reason: string) {
    super(`The bearer token is not valid (${reason}); get a new token`, 401, "INVALID_TOKEN", { reason });
  }
}

/** A call on the bus came without a signed grant in `ctx.meta.grant` (and the owner is not trusted from meta). */
export class GrantRequiredError extends MoleculerClientError {
  constructor(action: string) {
    super("This call needs a signed grant in ctx.meta.grant (an access token for the owner)", 401, "GRANT_REQUIRED", {
      action,
    });
  }
}

/** The grant does not carry `ops: true`, which operator actions need. */
export class OperatorOnlyError extends MoleculerClientError {
  constructor(action: string) {
    super("This needs an operator grant (ops: true)", 403, "OPERATOR_ONLY", { action });
  }
}

/** The bearer token's `exp` has passed. */
export class TokenExpiredError extends MoleculerClientError {
  constructor() {
    super("The bearer token has expired; get a new token", 401, "TOKEN_EXPIRED", {});
  }
}

/** The token is valid but does not list this serviceId among its `services`. */
export class ServiceNotAllowedError extends MoleculerClientError {
  constructor(serviceId: string) {
    super("The token does not grant access to this service", 403, "SERVICE_NOT_ALLOWED", { serviceId });
  }
}

/** The request names an owner other than the one its token was issued to. */
export class OwnerNotAllowedError extends MoleculerClientError {
  constructor() {
    super("The token does not grant access to this owner's queues", 403, "OWNER_NOT_ALLOWED", {});
  }
}

/** The action that verifies tokens could not be reached or failed; the request may be retried. */
export class AuthUnavailableError extends MoleculerRetryableError {
  constructor(action: string, reason: string) {
    super(`Token verification is unavailable (${reason}); retry later`, 503, "AUTH_UNAVAILABLE", { action, reason });
  }
}

/** The HTTP request body is not valid JSON (the body itself is never echoed). */
export class MalformedJsonError extends MoleculerClientError {
  constructor() {
    super("The request body is not valid JSON", 400, "MALFORMED_JSON", {});
  }
}

/** The HTTP request body is larger than the gateway's limit. */
export class BodyTooLargeError extends MoleculerClientError {
  constructor(limit: number) {
    super(`The request body is over the limit of ${limit} bytes`, 413, "BODY_TOO_LARGE", { limit });
  }
}

/** The HTTP request body could not be read (aborted, unsupported encoding or charset). */
export class UnreadableBodyError extends MoleculerClientError {
  constructor(status: number, reason: string) {
    super(`The request body could not be read (${reason})`, status, "UNREADABLE_BODY", { reason });
  }
}

/** The worker holds no task to ack, update or release (none fetched, or already acked). */
export class NoTaskError extends MoleculerClientError {
  constructor(serviceId: string, workerId: string) {
    super("The worker holds no task: fetch one first", 409, "NO_TASK", { serviceId, workerId });
  }
}

/** The worker's lease ran out and its task went to another worker; its ack did not complete the task. */
export class LeaseLostError extends MoleculerClientError {
  constructor(serviceId: string, workerId: string, taskId: string | undefined) {
    super("The worker's lease was lost: the task was given to another worker", 409, "LEASE_LOST", {
      serviceId,
      workerId,
      taskId,
    });
  }
}

/** No node offers the queue action the gateway needs (not started yet, or an older version). */
export class QueueUnavailableError extends MoleculerRetryableError {
  constructor(action: string) {
    super(`${action} is not available on any node; retry later`, 503, "QUEUE_UNAVAILABLE", { action });
  }
}
