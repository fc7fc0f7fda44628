/**
 * The package's entry point: the services to add to a broker, the ACL middleware, the workers, the
 * errors, and the types a caller needs. See the README's "Use it in your own broker".
 */
export {
  createQueueService,
  createQueueService as QueueService,
  MAX_WAIT_SECONDS,
  type QueueServiceOptions,
} from "./services/queue.service";
export {
  createKeysService,
  createKeysService as KeysService,
  type GetOekParams,
  type GetOekResult,
  type KeysServiceOptions,
  type KeysServiceSettings,
} from "./services/keys.service";
export {
  createApiService,
  createApiService as ApiService,
  type ApiServiceOptions,
  type ApiSettings,
} from "./services/api.service";
export {
  AclMiddleware,
  callerGrant,
  type AclDecisionRequest,
  type AclGuard,
  type AclMiddlewareOptions,
  type AclMode,
} from "./middleware/acl.middleware";
export { TransitEncryption } from "./lib/transit";

export { QueueWorker, type QueueWorkerBroker, type QueueWorkerOptions } from "./lib/worker/queue-worker";
export {
  QueueWorkerMixin,
  type QueueWorkerDefaults,
  type QueueWorkerDefinition,
  type QueueWorkerHandler,
  type QueueWorkerMixinVars,
  type QueueWorkersSchema,
} from "./lib/worker/queue-worker.mixin";
export {
  HttpQueueClient,
  HttpQueueWorker,
  type HttpAddOptions,
  type HttpQueueClientOptions,
  type HttpQueueWorkerOptions,
} from "./lib/worker/http-queue-worker";
export { HttpApiError } from "./lib/worker/http-api-error";
export {
  PullWorker,
  serializeError,
  type TaskHandler,
  type WorkerEvents,
  type WorkerTask,
} from "./lib/worker/pull-worker";
export { TaskAbortedError, WorkerStoppedError, type TaskAbortReason } from "./lib/worker/worker-errors";
export type { WorkerLogger, WorkerOptions } from "./lib/worker/worker-options";
export type { DeliveredTask, FailureKind, LeaseOutcome, TaskTransport } from "./lib/worker/task-transport";

export * as errors from "./lib/errors";
export { PlainCodec, type SealContext, type Sealed, type ValueCodec } from "./lib/codec";
export { cassandraConfigFromEnv, connectCassandra, type CassandraConfig } from "./lib/cassandra/client";
export {
  createGrantSigner,
  mintAccessToken,
  type AccessGrant,
  type GrantSigner,
  type MintTokenOptions,
} from "./lib/http/access-token";
export type { QueueEngineOptions } from "./lib/queue/options";
export type { DeadTask, FetchedTask, TaskEvent } from "./lib/queue/engine";
export type {
  AckOutcome,
  PublicState,
  QueueStats,
  ReleaseOutcome,
  TaskEventType,
  TaskStatus,
  UpdateOutcome,
} from "./lib/queue/task";
