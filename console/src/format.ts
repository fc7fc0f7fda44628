/** How the console writes numbers, durations and times. */

/** A duration in ms as "850 ms", "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** The age of the oldest waiting task: "–" when nothing waits. */
export const age = (ms: number): string => (ms > 0 ? duration(ms) : "–");

/** A moment as local time, with how far it is from now: "14:05:09 (in 42 s)". */
export function moment(epochMs: number | undefined, now = Date.now()): string {
  if (epochMs === undefined || !Number.isFinite(epochMs) || epochMs <= 0) return "–";
  const when = new Date(epochMs);
  const sameDay = when.toDateString() === new Date(now).toDateString();
  const text = sameDay ? when.toLocaleTimeString() : when.toLocaleString();
  const delta = epochMs - now;
  if (Math.abs(delta) < 1000) return `${text} (now)`;
  return delta > 0 ? `${text} (in ${duration(delta)})` : `${text} (${duration(-delta)} ago)`;
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
export const count = (n: number): string => integer.format(n);

/** Any JSON for reading: pretty-printed, "—" when absent. */
export function json(value: unknown): string {
  if (value === undefined) return "—";
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}
