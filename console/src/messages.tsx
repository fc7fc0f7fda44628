/** Error and success lines: an API error always shows its type and message. */
import { ApiError } from "./api";

export function ErrorLine({ error, context }: { error?: ApiError; context?: string }) {
  if (!error) return null;
  return (
    <p class="message error" role="alert" data-testid="error">
      {context ? <span class="context">{context}: </span> : null}
      <code class="type">{error.type}</code> {error.message}
      {error.status ? <span class="status"> (HTTP {error.status})</span> : null}
    </p>
  );
}

export function Notice({ text }: { text?: string }) {
  if (!text) return null;
  return (
    <p class="message notice" role="status" data-testid="notice">
      {text}
    </p>
  );
}

export const asApiError = (err: unknown): ApiError =>
  err instanceof ApiError ? err : new ApiError(0, "CONSOLE_ERROR", String(err));

export function StateBadge({ state, cancelled }: { state: string; cancelled?: boolean }) {
  return (
    <span class={`badge state-${state}`} data-testid="state">
      {state}
      {cancelled && state !== "cancelled" ? " (cancel requested)" : ""}
    </span>
  );
}
