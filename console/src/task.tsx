/** One task in full: its state and lease, progress, last error and value; cancel from here. */
import type { ComponentChild } from "preact";
import { useState } from "preact/hooks";
import { api, type ApiError, type TaskDetails } from "./api";
import { json, moment } from "./format";
import { usePoll, useSession } from "./hooks";
import { asApiError, ErrorLine, StateBadge } from "./messages";

/** States in which a cancel does something. */
const CANCELLABLE = new Set(["waiting", "delayed", "leased", "dead"]);

interface TaskPanelProps {
  serviceId: string;
  taskId: string;
  onClose(): void;
  report(text?: string, error?: ApiError): void;
}

export function TaskPanel({ serviceId, taskId, onClose, report }: TaskPanelProps) {
  const polled = usePoll(`task:${serviceId}:${taskId}`, token => api.inspect(token, serviceId, taskId));
  const task = polled.data;
  return (
    <aside class="task-panel" aria-labelledby="task-title" data-testid="task-panel">
      <header>
        <h2 id="task-title">
          Task <span class="mono">{taskId}</span>
        </h2>
        <button type="button" class="close" aria-label="Close the task" onClick={onClose}>
          ×
        </button>
      </header>
      <ErrorLine error={polled.error} context="Loading the task failed" />
      {task ? (
        <TaskBody
          task={task}
          serviceId={serviceId}
          report={(text, error) => {
            report(text, error);
            polled.refresh();
          }}
        />
      ) : (
        !polled.error && <p class="muted">Loading…</p>
      )}
    </aside>
  );
}

function TaskBody({
  task,
  serviceId,
  report,
}: {
  task: TaskDetails;
  serviceId: string;
  report(text?: string, error?: ApiError): void;
}) {
  const { token } = useSession();
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const cancel = async () => {
    setBusy(true);
    try {
      const outcome = await api.cancel(token, serviceId, task.taskId);
      if (!outcome.ok) report(`The task could not be cancelled: it is ${outcome.state}.`);
      else if (outcome.state === "leased") report("Cancel requested: the worker is told at its next update.");
      else report("The task is cancelled: it will not be delivered.");
    } catch (err) {
      report(undefined, asApiError(err));
    } finally {
      setBusy(false);
      setConfirming(false);
    }
  };
  const canCancel = CANCELLABLE.has(task.state) && !task.cancelled;
  const rows: [string, ComponentChild][] = [
    ["State", <StateBadge state={task.state} cancelled={task.cancelled} />],
    ["Attempts", `${task.attempt ?? 0}${task.maxAttempts ? ` of ${task.maxAttempts}` : " (no limit)"}`],
    ["Worker", task.worker ?? "–"],
    ["Lease deadline", moment(task.leaseUntil)],
    ["Not before", moment(task.notBefore)],
    ["Dead because", task.reason ?? "–"],
    ["Kept until", moment(task.expiresAt)],
  ];
  return (
    <div>
      <dl class="facts">
        {rows.map(([label, value]) => (
          <div key={label}>
            <dt>{label}</dt>
            <dd data-fact={label}>{value}</dd>
          </div>
        ))}
      </dl>
      <h3>Progress</h3>
      <pre data-testid="task-progress">{json(task.progress)}</pre>
      <h3>Last error</h3>
      <pre data-testid="task-error" class={task.error === undefined ? undefined : "error-text"}>
        {json(task.error)}
      </pre>
      <h3>Value</h3>
      <pre data-testid="task-value">{json(task.value)}</pre>
      <div class="actions">
        {confirming ? (
          <>
            <button
              type="button"
              class="danger"
              data-testid="cancel-confirm"
              disabled={busy}
              onClick={() => void cancel()}
            >
              Yes, cancel the task
            </button>
            <button type="button" onClick={() => setConfirming(false)}>
              No
            </button>
          </>
        ) : (
          <button
            type="button"
            class="danger"
            data-testid="cancel-task"
            disabled={!canCancel}
            title={canCancel ? undefined : `A ${task.state} task cannot be cancelled`}
            onClick={() => setConfirming(true)}
          >
            Cancel task…
          </button>
        )}
      </div>
    </div>
  );
}
