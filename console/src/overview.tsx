/** All the signed-in owner's queues (those the token covers), refreshed every 2 s. */
import { api, type QueueSummary } from "./api";
import { Throughput } from "./chart";
import { age, count } from "./format";
import { routeHref, usePoll } from "./hooks";
import { ErrorLine } from "./messages";

export function Overview() {
  const polled = usePoll("overview", token => api.queues(token));
  const queues = polled.data?.queues;
  return (
    <section class="overview" aria-labelledby="overview-title">
      <header class="page-head">
        <h1 id="overview-title">Queues</h1>
        <Freshness updatedAt={polled.updatedAt} />
      </header>
      <ErrorLine error={polled.error} context="Refreshing the queues failed" />
      {queues === undefined ? (
        polled.error ? null : (
          <p class="muted">Loading…</p>
        )
      ) : queues.length === 0 ? (
        <p class="empty" data-testid="no-queues">
          No queues yet. A queue shows up here after its first task is added.
        </p>
      ) : (
        <QueueTable queues={queues} />
      )}
    </section>
  );
}

function QueueTable({ queues }: { queues: QueueSummary[] }) {
  const sorted = [...queues].sort((a, b) => a.serviceId.localeCompare(b.serviceId));
  return (
    <table class="grid" data-testid="queues">
      <thead>
        <tr>
          <th scope="col">Queue</th>
          <th scope="col" class="num">
            Ready
          </th>
          <th scope="col" class="num">
            Delayed
          </th>
          <th scope="col" class="num">
            In flight
          </th>
          <th scope="col" class="num">
            Dead
          </th>
          <th scope="col" class="num">
            Oldest waiting
          </th>
          <th scope="col">Completed, last 5 min</th>
        </tr>
      </thead>
      <tbody>
        {sorted.map(q => (
          <tr key={q.serviceId} data-queue-row data-service-id={q.serviceId}>
            <th scope="row">
              <a class="mono" href={routeHref({ page: "queue", serviceId: q.serviceId, offset: 0 })}>
                {q.serviceId}
              </a>
            </th>
            <td class="num" data-stat="ready">
              {count(q.stats.ready)}
            </td>
            <td class="num" data-stat="delayed">
              {count(q.stats.delayed)}
            </td>
            <td class="num" data-stat="inFlight">
              {count(q.stats.inFlight)}
            </td>
            <td class={q.stats.dead > 0 ? "num alarm" : "num"} data-stat="dead">
              {count(q.stats.dead)}
            </td>
            <td class="num" data-stat="oldestWaiting">
              {age(q.stats.oldestWaitingMs)}
            </td>
            <td>
              <Throughput slots={q.stats.completedPer10s} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function Freshness({ updatedAt }: { updatedAt?: number }) {
  if (!updatedAt) return null;
  return (
    <p class="freshness muted" aria-live="off">
      Updated {new Date(updatedAt).toLocaleTimeString()} · every 2 s
    </p>
  );
}
