/** One queue: its counters and workers, its tasks by state a page at a time, and the operator's actions. */
import { useEffect, useState } from "preact/hooks";
import { api, type ApiError, type QueueStats, type TaskStatus } from "./api";
import { Throughput } from "./chart";
import { age, count, moment } from "./format";
import { navigate, routeHref, usePoll, useSession, type Route } from "./hooks";
import { asApiError, ErrorLine, Notice, StateBadge } from "./messages";
import { TaskPanel } from "./task";

export const PAGE_SIZE = 25;

const STATES: { value?: string; label: string }[] = [
  { label: "All" },
  { value: "waiting", label: "Waiting" },
  { value: "delayed", label: "Delayed" },
  { value: "leased", label: "Leased" },
  { value: "handing-over", label: "Handing over" },
  { value: "dead", label: "Dead" },
];

type QueueRoute = Extract<Route, { page: "queue" }>;

export function QueuePage({ route }: { route: QueueRoute }) {
  const { serviceId, state, offset, taskId } = route;
  const stats = usePoll(`stats:${serviceId}`, token => api.stats(token, serviceId));
  const tasks = usePoll(`tasks:${serviceId}:${state ?? ""}:${offset}`, token =>
    api.tasks(token, serviceId, { state, offset, limit: PAGE_SIZE }),
  );
  const [notice, setNotice] = useState<string>();
  const [failure, setFailure] = useState<ApiError>();
  const refreshAll = () => {
    stats.refresh();
    tasks.refresh();
  };
  const report = (text?: string, error?: ApiError) => {
    setNotice(text);
    setFailure(error);
    refreshAll();
  };
  const go = (change: Partial<QueueRoute>) => navigate({ ...route, ...change });

  return (
    <section class="queue" aria-labelledby="queue-title">
      <nav class="crumbs">
        <a href={routeHref({ page: "overview" })}>Queues</a> /
      </nav>
      <header class="page-head">
        <h1 id="queue-title" class="mono">
          {serviceId}
        </h1>
      </header>
      <ErrorLine error={stats.error} context="Refreshing the stats failed" />
      {stats.data && <StatsPanel stats={stats.data} />}
      <Notice text={notice} />
      <ErrorLine error={failure} />
      <Actions serviceId={serviceId} dead={stats.data?.dead ?? 0} report={report} />
      <div class="columns">
        <div class="tasks">
          <nav class="tabs" aria-label="Task states">
            {STATES.map(s => (
              <a
                key={s.label}
                href={routeHref({ ...route, state: s.value, offset: 0, taskId: undefined })}
                class={s.value === state ? "tab current" : "tab"}
                aria-current={s.value === state ? "page" : undefined}
                data-state={s.value ?? "all"}
              >
                {s.label}
              </a>
            ))}
          </nav>
          <ErrorLine error={tasks.error} context="Refreshing the tasks failed" />
          {tasks.data ? (
            <TaskList
              key={`${state ?? ""}`}
              serviceId={serviceId}
              tasks={tasks.data.tasks}
              total={tasks.data.total}
              offset={offset}
              state={state}
              selectedTask={taskId}
              onPage={next => go({ offset: next, taskId: undefined })}
              report={report}
            />
          ) : (
            !tasks.error && <p class="muted">Loading…</p>
          )}
        </div>
        {taskId && (
          <TaskPanel
            key={taskId}
            serviceId={serviceId}
            taskId={taskId}
            onClose={() => go({ taskId: undefined })}
            report={report}
          />
        )}
      </div>
    </section>
  );
}

function StatsPanel({ stats }: { stats: QueueStats }) {
  const cells: [string, string, string][] = [
    ["ready", "Ready", count(stats.ready)],
    ["delayed", "Delayed", count(stats.delayed)],
    ["inFlight", "In flight", count(stats.inFlight)],
    ["dead", "Dead", count(stats.dead)],
    ["handingOver", "Handing over", count(stats.handingOver)],
    ["oldestWaiting", "Oldest waiting", age(stats.oldestWaitingMs)],
  ];
  return (
    <div class="stats" data-testid="queue-stats">
      <dl class="counters">
        {cells.map(([key, label, value]) => (
          <div key={key} class={key === "dead" && stats.dead > 0 ? "counter alarm" : "counter"}>
            <dt>{label}</dt>
            <dd data-stat={key}>{value}</dd>
          </div>
        ))}
      </dl>
      <figure class="chart">
        <Throughput slots={stats.completedPer10s} width={480} height={72} labelled />
        <figcaption>Completed per 10 s</figcaption>
      </figure>
      {stats.workers.length > 0 && (
        <details class="workers">
          <summary>
            {stats.workers.length} worker{stats.workers.length === 1 ? "" : "s"} holding a task
          </summary>
          <table class="grid compact wrap" data-testid="workers-table">
            <thead>
              <tr>
                <th scope="col">Worker</th>
                <th scope="col">Task</th>
                <th scope="col" class="num">
                  Attempt
                </th>
                <th scope="col">Lease until</th>
              </tr>
            </thead>
            <tbody>
              {stats.workers.map(w => (
                <tr key={w.taskId}>
                  <td class="mono">{w.workerId}</td>
                  <td class="mono">{w.taskId}</td>
                  <td class="num">{w.attempt}</td>
                  <td>{moment(w.leaseUntil)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
    </div>
  );
}

interface TaskListProps {
  serviceId: string;
  tasks: TaskStatus[];
  total: number;
  offset: number;
  state?: string;
  selectedTask?: string;
  onPage(offset: number): void;
  report(text?: string, error?: ApiError): void;
}

function TaskList({ serviceId, tasks, total, offset, state, selectedTask, onPage, report }: TaskListProps) {
  const { token } = useSession();
  const [picked, setPicked] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState(false);
  const selectable = state === "dead";
  // Selections of tasks no longer listed (redriven, purged, another page) are dropped.
  useEffect(() => {
    setPicked(p => {
      const listed = new Set(tasks.map(t => t.taskId));
      const kept = [...p].filter(id => listed.has(id));
      return kept.length === p.size ? p : new Set(kept);
    });
  }, [tasks]);
  const toggle = (id: string) =>
    setPicked(p => {
      const next = new Set(p);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  const redriveSelected = async () => {
    setBusy(true);
    try {
      const { redriven } = await api.redrive(token, serviceId, [...picked]);
      setPicked(new Set());
      report(`Redrove ${redriven} task${redriven === 1 ? "" : "s"}: back in the queue with a fresh attempt count.`);
    } catch (err) {
      report(undefined, asApiError(err));
    } finally {
      setBusy(false);
    }
  };
  const last = Math.min(offset + tasks.length, total);

  return (
    <div>
      {selectable && (
        <div class="toolbar">
          <button
            type="button"
            data-testid="redrive-selected"
            disabled={busy || picked.size === 0}
            onClick={() => void redriveSelected()}
          >
            Redrive selected ({picked.size})
          </button>
        </div>
      )}
      {tasks.length === 0 ? (
        <p class="empty" data-testid="no-tasks">
          No {state ? `${state} ` : ""}tasks.
        </p>
      ) : (
        <table class="grid" data-testid="tasks">
          <thead>
            <tr>
              {selectable && (
                <th scope="col">
                  <input
                    type="checkbox"
                    aria-label="Select all on this page"
                    checked={tasks.length > 0 && tasks.every(t => picked.has(t.taskId))}
                    onChange={e =>
                      setPicked(
                        (e.currentTarget as HTMLInputElement).checked ? new Set(tasks.map(t => t.taskId)) : new Set(),
                      )
                    }
                  />
                </th>
              )}
              <th scope="col">Task</th>
              <th scope="col">State</th>
              <th scope="col" class="num">
                Attempt
              </th>
              <th scope="col">Worker</th>
              <th scope="col">Lease until / not before</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {tasks.map(t => (
              <tr
                key={t.taskId}
                data-task-row
                data-task-id={t.taskId}
                class={t.taskId === selectedTask ? "selected" : undefined}
              >
                {selectable && (
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Select ${t.taskId}`}
                      checked={picked.has(t.taskId)}
                      onChange={() => toggle(t.taskId)}
                    />
                  </td>
                )}
                <td>
                  <a
                    class="mono"
                    href={routeHref({ page: "queue", serviceId, state, offset, taskId: t.taskId })}
                    data-testid="open-task"
                  >
                    {t.taskId}
                  </a>
                </td>
                <td>
                  <StateBadge state={t.state} cancelled={t.cancelled} />
                </td>
                <td class="num">
                  {t.attempt ?? 0}
                  {t.maxAttempts ? ` / ${t.maxAttempts}` : ""}
                </td>
                <td class="mono breakable">{t.worker ?? "–"}</td>
                <td>{t.state === "leased" ? moment(t.leaseUntil) : moment(t.notBefore)}</td>
                <td class="breakable" data-testid="task-reason">
                  {t.reason ?? ""}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={offset === 0} onClick={() => onPage(Math.max(0, offset - PAGE_SIZE))}>
          ← Previous
        </button>
        <span data-testid="page-info">
          {total === 0 ? "0" : `${offset + 1}–${last}`} of {count(total)}
        </span>
        <button type="button" disabled={offset + PAGE_SIZE >= total} onClick={() => onPage(offset + PAGE_SIZE)}>
          Next →
        </button>
      </nav>
    </div>
  );
}

function Actions({
  serviceId,
  dead,
  report,
}: {
  serviceId: string;
  dead: number;
  report(text?: string, error?: ApiError): void;
}) {
  const { token } = useSession();
  const [purging, setPurging] = useState(false);
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const act = async (work: () => Promise<string>) => {
    setBusy(true);
    try {
      report(await work());
    } catch (err) {
      report(undefined, asApiError(err));
    } finally {
      setBusy(false);
    }
  };
  const redriveAll = () =>
    act(async () => {
      const { redriven } = await api.redrive(token, serviceId);
      return `Redrove ${redriven} dead task${redriven === 1 ? "" : "s"}.`;
    });
  const purge = () =>
    act(async () => {
      const { purged } = await api.purge(token, serviceId, typed);
      setPurging(false);
      setTyped("");
      return `Purged ${purged} task${purged === 1 ? "" : "s"} (waiting, delayed and dead); running tasks go on.`;
    });

  return (
    <div class="actions">
      <button type="button" data-testid="redrive-all" disabled={busy || dead === 0} onClick={() => void redriveAll()}>
        Redrive all dead ({count(dead)})
      </button>
      <button
        type="button"
        class="danger"
        data-testid="purge-open"
        disabled={busy}
        onClick={() => setPurging(!purging)}
      >
        Purge…
      </button>
      {purging && (
        <form
          class="confirm"
          data-testid="purge-form"
          onSubmit={e => {
            e.preventDefault();
            if (typed === serviceId) void purge();
          }}
        >
          <label>
            Purging removes every waiting, delayed and dead task of this queue and cannot be undone. Type the queue id{" "}
            <code>{serviceId}</code> to confirm:
            <input
              type="text"
              data-testid="purge-confirm"
              autocomplete="off"
              spellcheck={false}
              value={typed}
              onInput={e => setTyped((e.currentTarget as HTMLInputElement).value)}
            />
          </label>
          <button type="submit" class="danger" data-testid="purge-submit" disabled={busy || typed !== serviceId}>
            Purge queue
          </button>
          <button type="button" onClick={() => setPurging(false)}>
            Keep the tasks
          </button>
        </form>
      )}
    </div>
  );
}
