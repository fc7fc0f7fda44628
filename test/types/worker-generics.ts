/**
 * Compile test (checked by `npm run typecheck`, never run): QueueWorker and HttpQueueWorker take
 * the type of the values and of the handler's result, and their events carry them. Each
 * `@ts-expect-error` line must fail to compile, or the typecheck fails.
 */
import type { ServiceBroker } from "moleculer";
import { HttpQueueWorker } from "../../lib/worker/http-queue-worker";
import { QueueWorker } from "../../lib/worker/queue-worker";

interface Resize {
  url: string;
  width: number;
}
interface Done {
  bytes: number;
}

export function typedWorkers(broker: ServiceBroker): void {
  const worker = new QueueWorker<Resize, Done>(broker, { serviceId: "s" }, async (value, task) => {
    const width: number = value.width;
    const url: string = task.value.url;
    // @ts-expect-error: a Resize has no height
    void value.height;
    return { bytes: width + url.length };
  });
  worker.on("completed", (task, result: Done) => {
    const bytes: number = result.bytes;
    const url: string = task.value.url;
    void [bytes, url];
  });
  // @ts-expect-error: the result is a Done, not a string
  worker.on("completed", (_task, result: string) => void result);

  // @ts-expect-error: the handler must return a Done
  new QueueWorker<Resize, Done>(broker, { serviceId: "s" }, async () => "done");

  const http = new HttpQueueWorker<Resize, Done>(
    { baseUrl: "http://localhost:3000", token: "t", serviceId: "s" },
    value => ({ bytes: value.width }),
  );
  http.on("failed", (task, error) => void [task.value.width, error]);

  // Without type arguments the value is \`any\` and the result is what the handler returns.
  const loose = new QueueWorker(broker, { serviceId: "s" }, value => String(value.anything));
  loose.on("completed", (_task, result) => {
    const text: string = result;
    // @ts-expect-error: the result is a string
    void result.bytes;
    void text;
  });
}
