/**
 * QueueWorkerMixin: a Moleculer service declares the queues it works on, and the mixin runs a
 * QueueWorker for each while the service runs (started in `started`, closed in `stopped`).
 *
 *   broker.createService({
 *     name: "thumbnails",
 *     mixins: [QueueWorkerMixin({ meta: { ownerId: "tenant-1" } })],
 *     queueWorkers: {
 *       "6f1c2b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b": {
 *         concurrency: 4,
 *         timeToRecover: 120,
 *         async handler(value, task) { return this.resize(value, task.signal); },
 *       },
 *       // the short form: a handler with the mixin's defaults
 *       "0b9a3c55-3f0e-4c1a-9a55-2f1f3b1c9d11": async value => ({ seen: value }),
 *     },
 *   });
 *
 * Handlers run with `this` bound to the service. The service depends on the queue service, so it
 * starts once the queue is reachable. Tasks still running when the service stops are given back
 * after `closeTimeout`. On a broker that also runs the queue service, broker.stop() stops both at
 * once: destroy the worker service first (`broker.destroyService`) to finish the tasks in hand cleanly.
 */
import type { Service, ServiceSchema } from "moleculer";
import type { WorkerTask } from "./pull-worker";
import { QueueWorker, type QueueWorkerOptions } from "./queue-worker";

/** A queue handler of a service: `this` is the service. */
export type QueueWorkerHandler<TService = Service> = (this: TService, value: any, task: WorkerTask) => unknown;

/** One entry of `queueWorkers`: a handler with the options of its worker (the serviceId is the key). */
export interface QueueWorkerDefinition<TService = Service> extends Omit<QueueWorkerOptions, "serviceId" | "autorun"> {
  handler: QueueWorkerHandler<TService>;
}

/** `queueWorkers`: serviceId → a handler, or a handler with options. */
export type QueueWorkersSchema<TService = Service> = Record<
  string,
  QueueWorkerHandler<TService> | QueueWorkerDefinition<TService>
>;

/** Options every worker of the service gets unless its entry says otherwise. */
export type QueueWorkerDefaults = Omit<QueueWorkerOptions, "serviceId" | "autorun">;

declare module "moleculer" {
  // An augmentation repeats the interface's type parameters, used or not.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  interface ServiceSchema<TSettings, TMethods, TVars, TThis> {
    /** Queues this service works on (QueueWorkerMixin): serviceId → a handler, or `{ handler, ...options }`. */
    queueWorkers?: QueueWorkersSchema<TThis>;
  }
}

/** The service's running workers, by serviceId. */
export interface QueueWorkerMixinVars {
  $queueWorkers: Map<string, QueueWorker>;
}

type MixedService = Service & QueueWorkerMixinVars;
const vars = (service: Service) => service as MixedService;

export function QueueWorkerMixin(defaults: QueueWorkerDefaults = {}): Partial<ServiceSchema> {
  return {
    dependencies: [defaults.queueService ?? "worker.queue"],
    created() {
      vars(this).$queueWorkers = new Map();
    },
    started() {
      const schema = this.schema as ServiceSchema;
      for (const [serviceId, entry] of Object.entries(schema.queueWorkers ?? {})) {
        const { handler, ...options } = typeof entry === "function" ? { handler: entry } : entry;
        const worker = new QueueWorker(
          this.broker,
          { logger: this.logger, ...defaults, ...options, serviceId },
          handler.bind(this),
        );
        worker.on("error", err => this.logger.warn(`Queue ${serviceId}: ${err.message}`));
        worker.on("failed", (task, err) =>
          this.logger.warn(`Queue ${serviceId}: task ${task.id} (attempt ${task.attempt}) failed:`, err),
        );
        vars(this).$queueWorkers.set(serviceId, worker);
      }
    },
    async stopped() {
      const running = vars(this).$queueWorkers;
      const workers = [...running.values()];
      running.clear();
      await Promise.all(workers.map(w => w.close()));
    },
  };
}
